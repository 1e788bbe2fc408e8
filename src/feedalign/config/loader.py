"""YAML -> frozen config dataclasses, with dotted command-line overrides.

Every key is checked: an unknown key fails naming its full path and the closest valid keys
(``train.lrr`` -> did you mean ``train.lr``?); a value of the wrong type fails naming the key
and the expected type. Overrides look like ``train.lr=1e-4`` or ``data.0.weight=2``; the
value is parsed as a YAML scalar (or flow collection: ``model.lora.target_modules=[q_proj]``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from feedalign.config.errors import ConfigError
from feedalign.config.schema import Config


def load_config(path: str | Path, overrides: Sequence[str] | None = None) -> Config:
    """Read a YAML config file, apply ``key.sub=value`` overrides, build and validate it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return config_from_dict(raw, overrides)
    except ConfigError as exc:
        located = ConfigError(f"{path}: {exc}")
        located.key = exc.key
        raise located from None


def config_from_dict(raw: Mapping[str, Any], overrides: Sequence[str] | None = None) -> Config:
    """Build a :class:`Config` from nested dicts/lists (as parsed from YAML)."""
    data = _plain(raw)
    for item in overrides or ():
        apply_override(data, item)
    return build(Config, data, "")


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.0.c=value`` inside ``data`` in place (missing mappings are created)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]), create=True)
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {item!r}: '{'.'.join(parts[:-1])}' is not a section", key=key)


def _child(node: Any, part: str, where: str, *, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if isinstance(node, dict):
        if node.get(part) is None and create:
            node[part] = {}
        return node[part]
    raise ConfigError(f"'{where}' is not a section", key=where)


def _index(node: list[Any], part: str, where: str) -> int:
    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"'{part}' is not a list index", key=where) from None
    if not -len(node) <= index < len(node):
        raise ConfigError(f"index {index} out of range (the list has {len(node)} items)", key=where)
    return index


def _plain(value: Any) -> Any:
    """A deep copy as plain dicts and lists (so overrides never touch the caller's data)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build(cls: type, raw: Any, path: str) -> Any:
    """Construct dataclass ``cls`` from ``raw``, checking keys and value types."""
    where = path or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping, got {_describe(raw)}", key=where)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise _unknown_key(key, names, path)
    hints = typing.get_type_hints(cls)
    kwargs = {key: convert(hints[key], value, _join(path, key)) for key, value in raw.items()}
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise ConfigError("is a required key and is missing", key=_join(path, missing[0]))
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise (exc.under(path) if path else exc) from None


def _unknown_key(key: str, names: list[str], path: str) -> ConfigError:
    close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
    full = _join(path, str(key))
    if close:
        hint = "did you mean " + " or ".join(f"'{_join(path, c)}'" for c in close) + "?"
    else:
        hint = f"valid keys here: {names}"
    return ConfigError(f"unknown key; {hint}", key=full)


def convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (lists -> tuples, etc.)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(typing.get_args(tp), value, path, tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _type_error(path, f"one of {list(typing.get_args(tp))}", value)
    if origin is tuple:
        return _convert_tuple(typing.get_args(tp), value, path, tp)
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        raise _type_error(path, "a mapping", value)
    return _convert_scalar(tp, value, path)


def _convert_union(args: tuple[Any, ...], value: Any, path: str, tp: Any) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise _type_error(path, _type_name(tp), value)
    for arm in args:
        if arm is type(None):
            continue
        try:
            return convert(arm, value, path)
        except ConfigError as exc:
            # A nested error (deeper key) is more useful than "expected X or Y".
            if exc.key != path:
                raise
    raise _type_error(path, _type_name(tp), value)


def _convert_tuple(args: tuple[Any, ...], value: Any, path: str, tp: Any) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise _type_error(path, _type_name(tp), value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(args[0], v, f"{path}.{i}") for i, v in enumerate(value))
    if len(value) != len(args):
        raise _type_error(path, f"a list of {len(args)} items", value)
    return tuple(convert(a, v, f"{path}.{i}") for i, (a, v) in enumerate(zip(args, value)))


def _convert_scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads "1e-4" (no dot) as a string; accept any float literal.
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config annotation {tp!r} at {path}")
    raise _type_error(path, _type_name(tp), value)


def _type_error(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"expected {expected}, got {_describe(value)}", key=path)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    name = {dict: "mapping", list: "list"}.get(type(value), type(value).__name__)
    return f"{name} {value!r}" if isinstance(value, (str, int, float, bool)) else name


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        nullable = type(None) in typing.get_args(tp)
        return " or ".join(names) + (" or null" if nullable else "")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} items"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "bool (true/false)", int: "int", float: "float", str: "string"}.get(tp, str(tp))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def config_to_dict(config: Any) -> Any:
    """Plain dicts/lists (YAML-ready) from a config dataclass."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    return config


def dump_config(config: Config) -> str:
    """The config as YAML text; ``load_config`` of it gives back an equal config."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
