"""yaml in and out of configs: a safe loader that rejects duplicate keys, a tidy dumper.

No torch. :func:`load_yaml` reads a config file into plain data; :func:`dump_yaml` writes plain
data as yaml text (lists of scalars inline, keys in the order given).
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from inc_flow.errors import ConfigError


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing lists of scalars inline (``shape: [1, 28, 28]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would silently overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            if isinstance(key, (str, int, float)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """The data in a yaml config file; ConfigError if missing, unreadable, invalid or empty."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as e:
        where = "" if os.path.isabs(name) else f" (relative to {os.getcwd()})"
        raise ConfigError("", f"config file not found: {name!r}{where}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("", f"cannot read config file {name!r}: {e}") from e
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"invalid YAML in {name!r}{at}: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError("", f"invalid YAML in {name!r}: {e}") from e
    if data is None:
        message = "is empty; a config needs at least `model.name`, e.g. 'model: {name: my_model}'"
        raise ConfigError("", f"config file {name!r} {message}")
    return data


def dump_yaml(data: Any) -> str:
    """``data`` (plain yaml-safe data, e.g. ``Config.to_dict()``) as yaml text, keys unsorted."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)
