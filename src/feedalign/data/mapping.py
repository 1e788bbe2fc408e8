"""Bring-your-own layouts: ``columns:`` renames a file's columns to the canonical ones, and
``label_values:`` says which values mean thumbs up and which thumbs down.

``columns: {prompt: question, completion: answer, label: feedback}`` reads the canonical
column on the left from the file's column on the right (a dotted name such as ``data.rating``
reaches into nested objects). ``label_values: {up: [thumbs_up, 1], down: [thumbs_down, -1]}``
replaces the built-in label forms: every other value is an error naming the row. Strings are
compared without case or surrounding spaces, and numeric strings equal their numbers ("1" is
1), so a CSV and a JSONL file of the same log read the same.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.validation import FEEDBACK_FIELDS

# The names a `columns:` mapping may map to: the feedback fields and the optional columns.
CANONICAL = (*FEEDBACK_FIELDS, "objective", "id", "weight")


def check_columns(columns: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Validate a ``columns:`` mapping (canonical name -> file column)."""
    if columns is None:
        return None
    if not isinstance(columns, Mapping) or not columns:
        raise ValueError(f"columns must be a mapping {{canonical: file column}}, got {columns!r}")
    out = {}
    for canonical, column in columns.items():
        if canonical not in CANONICAL:
            raise ValueError(f"columns: unknown canonical column {canonical!r}; expected one of: {', '.join(CANONICAL)}")
        if not isinstance(column, str) or not column:
            raise ValueError(f"columns.{canonical}: expected a column name, got {column!r}")
        out[canonical] = column
    sources = list(out.values())
    if len(set(sources)) != len(sources):
        raise ValueError(f"columns: a file column is mapped twice: {out}")
    return out


def _lookup(row: Mapping[str, Any], column: str) -> tuple[bool, Any]:
    if column in row:
        return True, row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def apply_columns(row: Mapping[str, Any], columns: Mapping[str, str] | None) -> Mapping[str, Any]:
    """The row with each mapped file column renamed to its canonical name."""
    if not columns:
        return row
    out = dict(row)
    for canonical, column in columns.items():
        found, value = _lookup(row, column)
        if not found:
            raise RowError(column, f"missing: `columns:` reads '{canonical}' from this column")
        if canonical in row and canonical != column and canonical not in columns.values():
            raise RowError(
                canonical,
                f"the file has a '{canonical}' column and `columns:` also maps '{column}' to it; map only one",
            )
        out.pop(column.split(".")[0] if column not in row else column, None)
        out[canonical] = value
    return out


def mapped_sources(columns: Mapping[str, str] | None) -> frozenset[str]:
    """Top-level file columns consumed by a mapping."""
    return frozenset(c.split(".")[0] if "." in c else c for c in (columns or {}).values())


def _norm(value: Any) -> tuple[str, Any] | None:
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, numbers.Real):
        return ("num", float(value))
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return ("num", float(text))
        except ValueError:
            return ("str", text)
    return None


def _values(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else (value,)


@dataclass(frozen=True)
class LabelValues:
    """Which raw values mean up and which down."""

    up: tuple[Any, ...]
    down: tuple[Any, ...]

    @classmethod
    def from_config(cls, value: Mapping[str, Any] | None) -> LabelValues | None:
        if value is None:
            return None
        if not isinstance(value, Mapping) or set(value) != {"up", "down"}:
            raise ValueError(f"label_values must be {{up: [values], down: [values]}}, got {value!r}")
        up, down = (_values(value["up"]), _values(value["down"]))
        if not up or not down:
            raise ValueError("label_values: `up` and `down` each need at least one value")
        keys_up, keys_down = {_norm(v) for v in up}, {_norm(v) for v in down}
        if None in keys_up | keys_down:
            raise ValueError(f"label_values: values must be strings, numbers or booleans, got {value!r}")
        if keys_up & keys_down:
            raise ValueError(f"label_values: a value is both up and down: {value!r}")
        return cls(up, down)

    def parse(self, value: Any, field: str) -> bool:
        key = _norm(value)
        if key is not None:
            if key in {_norm(v) for v in self.up}:
                return True
            if key in {_norm(v) for v in self.down}:
                return False
        raise RowError(field, f"expected one of label_values up {list(self.up)} or down {list(self.down)}, got {value!r}")
