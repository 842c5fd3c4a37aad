"""Typed configuration: plain dataclasses, validated once at the edge.

`from_dict(Cls, mapping)` builds a (nested) dataclass from YAML data and rejects unknown keys and
wrong types with a message that names the dotted key. `apply_overrides` implements the command
line's `--set a.b=value` (the value parsed as YAML, so `--set loss.giou=0` gives an int).

One validation idiom: a field states its own range and its description with `setting(default,
doc=..., ge=/gt=/le=)` (kept in the field's metadata); `check_fields(obj, where)` checks every
declared range (`ConfigError("<where>.<field>: must be >= 1, got 0")`), then the class's one
`_check_cross_fields(where)` for rules between fields or beyond a range; `Validated` gives a
dataclass a `validate(where)` doing both. The YAML of every config is read by `load_yaml`.
Shared by the training config (`train/config.py`) and the daemon config (`streamer/config.py`).
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, TypeVar, Union

import yaml

from .errors import ConfigError
from .yaml_loader import safe_load_unique

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def setting(default: Any = dataclasses.MISSING, *, doc: str = "",
            ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
            or_null: bool = False, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its description and range in its metadata.

    Args:
        default, default_factory: as `dataclasses.field` (neither: a required key).
        doc: what the key means (docs/configuration.md's table of keys states the same text).
        ge, gt: lower bound, inclusive or exclusive; le: inclusive upper bound.
        or_null: the message says the key may also be null (None is never range-checked).
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    metadata: dict[str, Any] = {"doc": doc}
    if bounds:
        metadata["range"] = {**bounds, "or_null": or_null}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def range_problem(value: Any, ge: Optional[float] = None, gt: Optional[float] = None,
                  le: Optional[float] = None, or_null: bool = False) -> Optional[str]:
    """What is wrong with `value` against the bounds (e.g. `must be in (0, 1], got 2`), or None."""
    if ((ge is None or value >= ge) and (gt is None or value > gt)
            and (le is None or value <= le)):
        return None
    if le is not None:
        low = f"[{ge}" if ge is not None else f"({gt}" if gt is not None else "(-inf"
        return f"must be in {low}, {le}], got {value}"
    op = f">= {ge}" if ge is not None else f"> {gt}"
    return f"must be {op}{' or null' if or_null else ''}, got {value}"


def check_fields(obj: Any, where: str) -> None:
    """Check every range declared with `setting` (in field order), then the object's
    `_check_cross_fields(where)` when it has one.

    Raises:
        ConfigError: `<where>.<field>: <problem>`.
    """
    for f in dataclasses.fields(obj):
        bounds = f.metadata.get("range")
        value = getattr(obj, f.name)
        if bounds is None or value is None:
            continue
        problem = range_problem(value, **bounds)
        if problem is not None:
            raise ConfigError(f"{_join(where, f.name)}: {problem}")
    cross = getattr(obj, "_check_cross_fields", None)
    if cross is not None:
        cross(where)


def field_doc(cls: type, name: str) -> str:
    """The `doc` a field was declared with (`setting`), or ""."""
    return next((f.metadata.get("doc", "") for f in dataclasses.fields(cls) if f.name == name), "")


class Validated:
    """Mixin for a config section: `validate(where)` = `check_fields(self, where)`; `SECTION` is
    the section's dotted key when `where` is not given."""
    SECTION: ClassVar[str] = ""

    def validate(self, where: Optional[str] = None) -> None:
        """Raise ConfigError naming `<where>.<field>` for a value outside its declared range or
        breaking a cross-field rule."""
        check_fields(self, self.SECTION if where is None else where)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with safe tags only (no python tags, so no code runs) and no key
    given twice (`detector/yaml_loader.py`); ConfigError naming the file and line otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    try:
        data = safe_load_unique(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def expand_env(value: Any, where: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """Replace `${NAME}` in every string of a YAML tree with the environment variable NAME.

    A missing variable is an error naming the key, never an empty string silently.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            name = m.group(1)
            if name not in env:
                raise ConfigError(f"{where or 'config'}: environment variable ${{{name}}} is not set")
            return env[name]
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, _join(where, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` overrides to a nested mapping (a copy is returned)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set loss.giou=0")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking keys and types recursively.

    Args:
        cls: a dataclass type whose fields have type hints.
        data: the mapping (usually from YAML); None means all defaults.
        where: dotted path of this mapping, for error messages.
    Returns:
        An instance of `cls`.
    Raises:
        ConfigError: on an unknown key, a missing required key or a wrong type.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_join(where, unknown[0])}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass tree to plain YAML/JSON-able data (lists, dicts, scalars)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{key}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin is typing.Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        # YAML 1.1 reads a bare on/off/yes/no as a boolean: `amp: off` and `--set train.amp=off`
        # mean the choice "off", so a boolean maps to the one on/off-like choice it can mean.
        if isinstance(value, bool):
            meant = [a for a in args if isinstance(a, str)
                     and a.lower() in (("on", "yes", "true") if value else ("off", "no", "false"))]
            if len(meant) == 1:
                return meant[0]
        raise ConfigError(f"{key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        item_tp = args[0] if args else Any
        return [_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(vt, v, _join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 (PyYAML) reads `1e-3` without a dot as a string; accept it as the number
        # every user means by it.
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    else:
        raise ConfigError(f"{key}: unsupported type {tp!r} in schema")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_describe(value)}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
