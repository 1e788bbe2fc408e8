"""Every config key with its value, default and meaning, for ``feedalign config show``.

The meanings are the ``Attributes:`` sections of the dataclass docstrings in
:mod:`feedalign.config.schema` (the single source); :func:`field_docs` reads them and
:func:`missing_docs` lists keys that have none (a test keeps that list empty).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

import yaml

from feedalign.config import schema

REQUIRED = "<required>"
_ATTR = re.compile(r"^(\w+):\s*(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """``{field: one-line meaning}`` from the ``Attributes:`` section of ``cls.__doc__``."""
    doc = cls.__doc__ or ""
    lines = doc.splitlines()
    out: dict[str, str] = {}
    inside, current = False, None
    for line in lines:
        text = line.strip()
        if text == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if not text:
            break
        match = _ATTR.match(text)
        if match and match.group(1) in {f.name for f in dataclasses.fields(cls)}:
            current = match.group(1)
            out[current] = match.group(2)
        elif current is not None:
            out[current] += " " + text
    return out


def _nested(cls: type) -> dict[str, tuple[type, bool]]:
    """Fields whose type is a config dataclass: ``{name: (class, is_sequence)}``."""
    hints = typing.get_type_hints(cls, vars(schema))
    out = {}
    for name, hint in hints.items():
        args = (hint,) if typing.get_origin(hint) is tuple else (typing.get_args(hint) or (hint,))
        for arg in args:
            inner = typing.get_args(arg)
            candidate, seq = (inner[0], True) if typing.get_origin(arg) is tuple and inner else (arg, False)
            if dataclasses.is_dataclass(candidate):
                out[name] = (candidate, seq)
    return out


def missing_docs() -> list[str]:
    """``Class.field`` of every config field without a meaning."""
    classes = [schema.Config, schema.ModelConfig, schema.LoraConfig, schema.ReferenceConfig,
               schema.DataSourceConfig, schema.MarginsConfig, schema.TrainConfig]
    return [f"{cls.__name__}.{f.name}" for cls in classes for f in dataclasses.fields(cls)
            if f.name not in field_docs(cls)]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return REQUIRED


def _scalar(value: Any) -> str:
    if value == REQUIRED:
        return REQUIRED
    if isinstance(value, tuple):
        value = list(value)
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text


def _describe(cls: type, value: Any, indent: str, lines: list[str]) -> None:
    docs, nested = field_docs(cls), _nested(cls)
    for f in dataclasses.fields(cls):
        current = getattr(value, f.name) if value is not None else _default(f)
        default = _default(f)
        meaning = docs.get(f.name, "(no description)")
        if f.name in nested and not (current is None or current == REQUIRED):
            sub, seq = nested[f.name]
            lines.append(f"{indent}{f.name}:  # {meaning}")
            for item in (current if seq else [current]):
                if seq:
                    lines.append(f"{indent}  -")
                _describe(sub, item, indent + ("    " if seq else "  "), lines)
            continue
        mark = "default" if _scalar(current) == _scalar(default) else f"default: {_scalar(default)}"
        lines.append(f"{indent}{f.name}: {_scalar(current)}  # {meaning} [{mark}]")
        if f.name in nested:  # unset section: its keys, commented out, with their defaults
            sub, _ = nested[f.name]
            sub_docs = field_docs(sub)
            for g in dataclasses.fields(sub):
                lines.append(f"{indent}#   {g.name}: {_scalar(_default(g))}  # {sub_docs.get(g.name, '')}")


def describe_config(config: schema.Config | None) -> str:
    """YAML with a comment on every key: its meaning and its default. ``None``: the
    defaults of every key (one data source as a template; required keys marked)."""
    lines: list[str] = []
    if config is None:
        lines.append(f"# every key with its default; {REQUIRED} keys must be set")
        template = _Template()
        _describe(schema.Config, template, "", lines)
    else:
        _describe(schema.Config, config, "", lines)
    return "\n".join(lines) + "\n"


class _Template:
    """Stands for a Config with every key at its default and one data source."""

    def __getattr__(self, name: str) -> Any:
        if name == "data":
            return (_Defaults(schema.DataSourceConfig),)
        cls = _nested(schema.Config)[name][0]
        return _Defaults(cls)


class _Defaults:
    def __init__(self, cls: type) -> None:
        self._values = {f.name: _default(f) for f in dataclasses.fields(cls)}

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None
