"""Optional per-row marks on completions: ``truncated`` (completion rows),
``chosen_truncated`` / ``rejected_truncated`` (pairs) say a completion was cut off (e.g. at
a sampling length limit), so it is tokenised without EOS (``data.collate``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.messages import describe_value
from feedalign.data.records import LabeledRecord, PairRecord, Record

_TRUNCATION_FIELDS = {PairRecord: ("chosen_truncated", "rejected_truncated"), LabeledRecord: ("truncated",)}
TRUNCATION_COLUMNS = frozenset(name for names in _TRUNCATION_FIELDS.values() for name in names)


def mark_truncated(row: Mapping[str, Any], records: list[Record]) -> list[Record]:
    """Optional bool columns marking a completion as cut off: ``truncated`` (completion
    rows), ``chosen_truncated`` / ``rejected_truncated`` (pairs)."""
    out = []
    for rec in records:
        marks = {}
        for name in _TRUNCATION_FIELDS.get(type(rec), ()):
            value = row.get(name)
            if value is not None and not isinstance(value, bool):
                raise RowError(name, f"expected true or false, got {describe_value(value)}")
            if value:
                marks[name] = True
        out.append(replace(rec, **marks) if marks else rec)
    return out
