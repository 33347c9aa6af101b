"""INC 1.x's own ``best_configure.yaml`` read as an inc_flow configure, without running it.

INC 1.x PyTorch saves its tuning config with ``yaml.dump``: the ``op`` mapping is keyed by
``!!python/tuple [name, type]`` and each op holds INC's weight/activation settings (``bit:
7.0``, ``compute_dtype``, ``quant_mode``...). :func:`read` parses it with :class:`IncLoader`,
a safe loader that turns ``!!python/tuple`` into tuples and refuses every other python tag
(naming the file and the tag), then maps it onto inc_flow's layout (``approach``,
``framework``, ``backend``, ``op`` as a list) so that ``inc_flow.load`` rebuilds it with the
weights of ``best_model_weights.pt`` (read with ``weights_only=True``).

Mapped: FX models (``framework: pytorch_fx``) tuned static, dynamic or QAT, their module ops
of the types inc_flow quantizes, per-op observers, and ``op_wise.default_qconfig`` when it
agrees with the first op (inc_flow's global setting). Anything else raises a SaveLoadError
naming the key and why (see ``UNMAPPABLE``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from inc_flow.config.names import DEFAULT_QCONFIG
from inc_flow.errors import SaveLoadError
from inc_flow.search.plan import APPROACHES, OpPlan
from inc_flow.vocab import Backend, Framework

CONFIGURE_FILE = "best_configure.yaml"
PYTHON_TAG = "tag:yaml.org,2002:python/"
TUPLE_TAG = PYTHON_TAG + "tuple"
INC_BACKEND = Backend.FBGEMM.value  # INC 1.x ran torch's default x86 engine, fbgemm
# The module types inc_flow lists as ops (quant.mapping's STATIC_TYPES and DYNAMIC_TYPES).
PLAN_TYPES = frozenset(
    ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
    + ("Linear", "LSTM", "GRU", "LSTMCell", "GRUCell", "RNNCell")
)
UNMAPPABLE = {
    "eager": (
        "is INC's eager mode: INC quantized between the model's own QuantStub/DeQuantStub, "
        "while inc_flow's eager mode wraps each op in stubs of its own, so the saved weights "
        "(and the int8 graph) do not map; load it with INC, or tune the model with inc_flow"
    ),
    "sub_modules": (
        "lists sub-modules INC converted one by one (the model did not trace whole); inc_flow "
        "cannot map that layout onto its own"
    ),
    "bf16": "lists bf16 ops; inc_flow produces int8/fp32 models only",
}


class IncLoader(yaml.SafeLoader):
    """A safe loader that also reads ``!!python/tuple`` (as a tuple) and nothing else of
    python's tags; ``null`` reads as ``{}`` as in INC's own loader. ``file`` names the file in
    errors."""

    file = "<yaml>"


def _tuple(loader: IncLoader, node: yaml.Node) -> tuple:
    return tuple(loader.construct_sequence(node, deep=True))  # type: ignore[arg-type]


def _refuse(loader: IncLoader, suffix: str, node: yaml.Node) -> Any:
    line = node.start_mark.line + 1
    raise SaveLoadError(
        f"{loader.file!r} is not valid yaml for inc_flow: it holds the python tag "
        f"!!python/{suffix} (line {line}), refused; only !!python/tuple (INC's op keys) is "
        "read, and nothing from the file was executed"
    )


IncLoader.add_constructor(TUPLE_TAG, _tuple)
IncLoader.add_multi_constructor(PYTHON_TAG, _refuse)
IncLoader.add_constructor("tag:yaml.org,2002:null", lambda loader, node: {})


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """``path`` parsed with :class:`IncLoader`."""
    loader_cls = type("IncFileLoader", (IncLoader,), {"file": os.fspath(path)})
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=loader_cls)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise SaveLoadError(f"{os.fspath(path)!r} is not valid yaml: {e}") from e
    except UnicodeDecodeError as e:
        raise SaveLoadError(f"{os.fspath(path)!r} is not UTF-8 text: {e}") from e
    except OSError as e:
        raise SaveLoadError(f"cannot read {os.fspath(path)!r}: {e}") from e


def read(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """INC 1.x's configure in ``checkpoint_dir`` mapped to inc_flow's layout, or None when
    the file is inc_flow's own (it has ``format_version``) or absent."""
    path = Path(checkpoint_dir)
    path = path / CONFIGURE_FILE if path.is_dir() else path
    if not path.is_file():
        return None
    data = load_yaml(path)
    if not isinstance(data, Mapping) or "format_version" in data:
        return None
    if not isinstance(data.get("op"), Mapping):
        return None  # neither layout: inc_flow's reader names what is wrong
    return to_inc_flow(data, str(path))


def _fail(file: str, key: str, reason: str) -> SaveLoadError:
    return SaveLoadError(f"`{key}` in {file!r} (INC 1.x) {reason}")


def _op_entry(file: str, key: Any, cfg: Any) -> dict[str, Any]:
    """One INC op as inc_flow's op dict; checks what inc_flow cannot honour."""
    where = f"op[{key!r}]"
    if not isinstance(cfg, Mapping) or not isinstance(cfg.get("activation"), Mapping):
        raise _fail(file, where, f"must map weight/activation settings, got {cfg!r}")
    weight = dict(cfg.get("weight") or {})
    act = dict(cfg["activation"])
    for tensor, values in (("weight", weight), ("activation", act)):
        if values.get("dtype") == "bf16":
            raise _fail(file, f"{where}.{tensor}.dtype", UNMAPPABLE["bf16"])
    fp32 = "fp32" in (weight.get("dtype"), act.get("dtype"))
    if not fp32:
        bit = weight.pop("bit", 7.0)
        if bit != 7.0:
            raise _fail(file, f"{where}.weight.bit", f"must be 7.0 (INC's value), got {bit!r}")
        compute = act.pop("compute_dtype", "uint8")
        if compute not in ("uint8", None, {}):
            message = "must be 'uint8' (torch's int8 kernels take uint8 activations)"
            raise _fail(file, f"{where}.activation.compute_dtype", f"{message}, got {compute!r}")
        if act.get("granularity", "per_tensor") != "per_tensor":
            reason = f"must be per_tensor, got {act['granularity']!r}"
            raise _fail(file, f"{where}.activation.granularity", reason)
        if act.get("algorithm") == "placeholder":  # INC's dynamic ops: no observer
            act.pop("algorithm")
        if weight.get("scheme") == "asym_float":
            reason = "asym_float (INC's Embedding weights) has no inc_flow equivalent"
            raise _fail(file, f"{where}.weight.scheme", reason)
    entry = {
        "name": str(key[0]),
        "type": str(key[1]),
        "weight": {"dtype": "fp32"} if fp32 else weight,
        "activation": {"dtype": "fp32"} if fp32 else act,
    }
    try:
        OpPlan.from_dict(entry)
    except Exception as e:  # noqa: BLE001 - PlanError / KeyError: reported with the key
        raise _fail(file, where, f"does not describe an op inc_flow can build: {e}") from e
    return entry


def to_inc_flow(data: Mapping[str, Any], file: str) -> dict[str, Any]:
    """INC's tuning config as inc_flow's configure dict (no example inputs: INC saves none)."""
    framework = data.get("framework")
    if framework == "pytorch":
        raise _fail(file, "framework", UNMAPPABLE["eager"])
    if framework != Framework.FX.value:
        raise _fail(file, "framework", f"must be 'pytorch_fx', got {framework!r}")
    approach = data.get("approach")
    if approach not in APPROACHES:
        raise _fail(file, "approach", f"must be one of {list(APPROACHES)}, got {approach!r}")
    if data.get("fx_sub_module_list"):
        raise _fail(file, "fx_sub_module_list", UNMAPPABLE["sub_modules"])
    if data.get("bf16_ops_list"):
        raise _fail(file, "bf16_ops_list", UNMAPPABLE["bf16"])
    ops, others, default = [], [], None
    for key, cfg in data["op"].items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise _fail(file, f"op[{key!r}]", "must be keyed by a (name, type) tuple")
        if key[0] == DEFAULT_QCONFIG:
            default = _op_entry(file, key, cfg)
        elif key[1] in PLAN_TYPES:
            ops.append(_op_entry(file, key, cfg))
        else:
            others.append((key, _op_entry(file, key, cfg)))
    if not ops:
        raise _fail(file, "op", f"has no op of a type inc_flow quantizes ({sorted(PLAN_TYPES)})")
    # inc_flow's global setting (modules it does not list, functional ops) is the first op's.
    first = OpPlan.from_dict({**ops[0], "weight": {**ops[0]["weight"], "dtype": "int8"}})
    if default is not None:
        plan = OpPlan.from_dict(default)
        if not plan.quantized or plan.settings() != first.settings():
            reason = (
                f"differs from the first op {ops[0]['name']!r}, whose settings inc_flow takes "
                "as the global setting; it cannot hold two"
            )
            raise _fail(file, f"op[{(DEFAULT_QCONFIG, '')!r}]", reason)
    for key, entry in others:  # modules inc_flow quantizes by the global setting
        if entry["activation"].get("dtype") == "fp32":
            reason = "is fp32; inc_flow quantizes ops of this type by its global setting"
            raise _fail(file, f"op[{key!r}]", reason)
    return {
        "approach": approach,
        "framework": framework,
        "backend": INC_BACKEND,
        "op": ops,
        "example_inputs": [],
    }
