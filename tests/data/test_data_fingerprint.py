"""Content fingerprints: content and order count, locations do not."""

from __future__ import annotations

from dataclasses import replace

from feedalign.data.fingerprint import canonical_json, fingerprint_records
from feedalign.data.records import LabeledRecord, PairRecord


def _records():
    return [PairRecord("p", "good", "bad", source="a.jsonl:1"), LabeledRecord("q", "fine", True, source="a.jsonl:2")]


def test_same_content_same_fingerprint_wherever_it_came_from():
    moved = [replace(r, source=f"b.jsonl:{i + 7}") for i, r in enumerate(_records())]
    assert fingerprint_records(_records()) == fingerprint_records(moved)
    assert fingerprint_records(_records()).startswith("sha256:")


def test_an_edit_a_reordering_or_a_missing_row_changes_it():
    base = fingerprint_records(_records())
    edited = _records()
    edited[0] = replace(edited[0], chosen="good!")
    assert fingerprint_records(edited) != base
    assert fingerprint_records(list(reversed(_records()))) != base
    assert fingerprint_records(_records()[:1]) != base
    assert fingerprint_records([]) != fingerprint_records([{}])  # the count is part of it


def test_canonical_json_sorts_keys_and_keeps_unicode():
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    assert fingerprint_records([{"b": 1, "a": 2}]) == fingerprint_records([{"a": 2, "b": 1}])
