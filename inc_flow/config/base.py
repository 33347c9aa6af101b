"""The machinery every config section shares: checked fields, nested sections, named entries.

A section is a frozen dataclass deriving :class:`Section`; each field declares its check (see
:func:`checked`) and construction runs them, so a section built in Python is checked and
normalised like yaml. ``from_dict`` is closed (unknown keys are rejected, with INC's reason where
it has one) and ``to_dict`` gives the yaml form back. :class:`NamedSpec` is one yaml entry
``Name: params`` checked against a table of :mod:`inc_flow.config.names`. No torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import partial
from typing import Any, ClassVar

from inc_flow.config.checks import check_params
from inc_flow.config.names import SCALAR_PARAM
from inc_flow.config.problems import Problems, config_error, show, unknown_key, unknown_name
from inc_flow.errors import ConfigError


# --- fields ------------------------------------------------------------------------------
def put(obj: object, name: str, value: Any) -> None:
    """Sets a field of a frozen dataclass (normalising it during ``__post_init__``)."""
    object.__setattr__(obj, name, value)


def checked(
    default: Any = MISSING, check: Callable | None = None, factory: Any = MISSING, **kw: Any
) -> Any:
    """A field whose value goes through ``check(problems, key, value, **kw)`` at construction."""
    meta = {"check": partial(check, **kw)} if check else {}
    return field(default=default, default_factory=factory, metadata=meta)


def as_section(p: Problems, key: str, value: Any, cls: type, optional: bool = False) -> Any:
    """``value`` as a ``cls`` section: kept if it is one, else parsed from its mapping."""
    if isinstance(value, cls) or (value is None and optional):
        return value
    try:
        return cls.from_dict(value)
    except ConfigError as e:
        p.merge(key, e)
        return value


def sub(cls: type, optional: bool = False) -> Any:
    """A field holding a nested section (None when ``optional``, else ``cls()`` by default)."""
    if optional:
        return checked(None, as_section, cls=cls, optional=True)
    return checked(check=as_section, factory=cls, cls=cls)


def dump(value: Any) -> Any:
    """Plain yaml-safe data: tuples become lists, a tuple of named specs one mapping."""
    if isinstance(value, tuple) and value and all(isinstance(v, NamedSpec) for v in value):
        return {v.name: v.to_item() for v in value}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    if isinstance(value, Mapping):
        return {k: dump(v) for k, v in value.items()}
    return value


# --- sections ----------------------------------------------------------------------------
class Section:
    """Base of the sections: field checks on construction, closed ``from_dict``, ``to_dict``."""

    _SECTION: ClassVar[str] = ""  # which names.INC_UNSUPPORTED table explains rejected keys

    def __post_init__(self) -> None:
        p = Problems()
        for f in fields(self):  # type: ignore[arg-type]
            if "check" in f.metadata:
                put(self, f.name, f.metadata["check"](p, f.name, getattr(self, f.name)))
        if not len(p):
            self._check_together(p)
        p.raise_if_any()

    def _check_together(self, p: Problems) -> None:
        """Checks across fields; overridden where a section has them."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Any:
        """Builds the section from its yaml mapping; None means all defaults."""
        p = Problems()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            p.add("", f"must be a mapping, got {show(data)}")
            p.raise_if_any()
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if key not in names:
                p.add(str(key), unknown_key(key, names, cls._SECTION))
        kwargs = {k: v for k, v in data.items() if k in names}
        missing = [
            f.name
            for f in fields(cls)  # type: ignore[arg-type]
            if f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs
        ]
        for name in missing:
            p.add(name, "is required")
        if not missing:
            try:
                obj = cls(**kwargs)
            except ConfigError as e:
                p.merge("", e)  # after the unknown keys, in the order found
        p.raise_if_any()
        return obj

    def to_dict(self) -> dict[str, Any]:
        """The yaml form; None fields and empty lists/mappings are left out."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None and not (isinstance(value, (tuple, dict)) and not value):
                out[f.name] = dump(value)
        return out


# --- named entries: datasets, transforms, metrics, postprocess ------------------------------
@dataclass(frozen=True)
class NamedSpec:
    """One yaml entry ``Name: params`` checked against a name table; defaults filled in."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    _TABLE: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    _WHAT: ClassVar[str] = ""

    def __post_init__(self) -> None:
        p = Problems()
        if not isinstance(self.name, str) or self.name not in self._TABLE:
            p.add(str(self.name), unknown_name(self._WHAT, self.name, self._TABLE))
        else:
            table = self._TABLE[self.name]
            put(self, "params", check_params(p, self.name, self.name, self.params, table))
            if not len(p):
                self._check_together(p)
        p.raise_if_any()

    def _check_together(self, p: Problems) -> None:
        """Checks across parameters; overridden where needed."""

    @classmethod
    def from_item(cls, name: str, value: Any) -> Any:
        """From one yaml entry: ``topk: 1``, ``Normalize: {mean: [0.5]}``, ``ToTensor: {}``."""
        scalar = SCALAR_PARAM.get(name)
        return cls(name, {scalar: value} if scalar else value)

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        """From a mapping with exactly one entry, e.g. ``{"FashionMNIST": {"train": True}}``."""
        if not isinstance(data, Mapping) or len(data) != 1:
            example = next(iter(cls._TABLE))
            message = f"must name exactly one {cls._WHAT}, e.g. {{{example}: ...}}"
            raise config_error([("", f"{message}, got {show(data)}")])
        ((name, value),) = data.items()
        return cls.from_item(name, value)

    def to_item(self) -> Any:
        """The yaml value of the entry (the bare parameter for ``topk``/``LabelShift``)."""
        scalar = SCALAR_PARAM.get(self.name)
        return self.params[scalar] if scalar else dump(self.params)

    def to_dict(self) -> dict[str, Any]:
        return {self.name: self.to_item()}


def as_specs(p: Problems, key: str, value: Any, cls: type[NamedSpec]) -> Any:
    """A yaml mapping ``{Name: params, ...}`` (or a sequence of ``cls``) as a tuple of ``cls``."""
    if value is None:
        return ()
    before = len(p)
    if isinstance(value, Mapping):
        value = [as_section(p, key, {name: params}, cls) for name, params in value.items()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, cls) for v in value):
        if len(p) == before:
            p.add(key, f"must be a mapping of {cls._WHAT} names to parameters, got {show(value)}")
        return value
    names = [v.name for v in value]
    for name in sorted({n for n in names if names.count(n) > 1}):
        p.add(f"{key}.{name}", f"is given more than once; each {cls._WHAT} may appear once")
    return tuple(value)
