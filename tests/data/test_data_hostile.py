"""Hostile files: every failure of a row or a file is a located problem, never an exception,
and a bad file never stops the inspection of the others."""

from __future__ import annotations

import gzip
import json
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedalign.cli.main import main
from feedalign.data import load_records
from feedalign.data.errors import FeedbackDataError
from feedalign.data.inspect import inspect_sources, report_json

GOOD = '{"prompt": "p", "chosen": "a", "rejected": "b"}\n'


def _collect(path):
    result = load_records(path, on_invalid="collect")
    assert result.rows_total == result.rows_accepted + len(result.rejected)
    return result


def test_duplicate_keys_are_rejected_not_last_wins(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"prompt": "p", "completion": "c", "label": true, "label": false}\n' + GOOD)
    result = _collect(path)
    assert len(result.records) == 1
    assert result.rejected[0].source == f"{path}:1" and "duplicate key 'label'" in result.rejected[0].reason
    with pytest.raises(FeedbackDataError, match="duplicate key"):
        load_records(path)
    listed = tmp_path / "dup.json"
    listed.write_text('[{"prompt": "p", "completion": "c", "label": 1, "label": 0}]')
    assert "duplicate key" in _collect(listed).rejected[0].reason


def test_deep_nesting_huge_numbers_and_surrogates(tmp_path):
    path = tmp_path / "hostile.jsonl"
    lines = [
        '{"prompt": ' + "[" * 100000 + "]" * 100000 + "}",  # RecursionError in json
        '{"prompt": "p", "messages": ' + "[" * 150 + "]" * 150 + "}",  # parses, too deep
        '{"prompt": "p", "completion": "c", "score": 1' + "0" * 5000 + "}",  # past the digit limit
        '{"prompt": "p", "completion": "c", "score": ' + str(10**400) + ', "objective": "x"}',  # not a float
        '{"prompt": "p", "completion": "c", "score": 1e999}',  # inf
        '{"prompt": "p\\ud800", "chosen": "a", "rejected": "b"}',  # lone surrogate
        '{"prompt": "p \\ud83d\\ude00", "chosen": "a", "rejected": "b"}',  # a valid pair of escapes
    ]
    path.write_text("\n".join(lines) + "\n")
    result = _collect(path)
    reasons = {int(r.source.rsplit(":", 1)[1]): r.reason for r in result.rejected}
    assert "nested too deeply" in reasons[1] and "nested too deeply" in reasons[2]
    assert "invalid number" in reasons[3]
    assert "too large for a float" in reasons[4] and "finite" in reasons[5]
    assert "lone surrogate" in reasons[6] and "field 'prompt'" in reasons[6]
    assert len(result.records) == 1 and result.records[0].prompt == "p \U0001f600"


def test_cr_only_lines_and_json_array_in_jsonl(tmp_path):
    cr = tmp_path / "mac.jsonl"
    cr.write_bytes(GOOD.strip().encode() + b"\r" + GOOD.strip().encode() + b"\r")
    result = _collect(cr)
    assert not result.records and "CR only" in result.rejected[0].reason
    array = tmp_path / "array.jsonl"
    array.write_text("[\n" + GOOD.strip() + ",\n" + GOOD.strip() + "\n]\n")
    result = _collect(array)
    assert not result.records and len(result.rejected) == 1
    assert "found a JSON array" in result.rejected[0].reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_a_problem(tmp_path):
    path = tmp_path / "secret.jsonl"
    path.write_text(GOOD)
    path.chmod(0)
    try:
        result = _collect(path)
        assert not result.records and "PermissionError" in result.rejected[0].reason
    finally:
        path.chmod(0o644)


def test_unreadable_file_errors_are_located(tmp_path, monkeypatch):
    # Whatever the OS says while reading (here: a PermissionError) ends that file with a problem.
    import feedalign.data.readers as readers

    path = tmp_path / "a.jsonl"
    path.write_text(GOOD)

    def denied(_path):
        raise PermissionError(13, "Permission denied", str(_path))

    monkeypatch.setattr(readers, "open_binary", denied)
    result = _collect(path)
    assert result.rejected[0].source == str(path) and "PermissionError" in result.rejected[0].reason


def test_damaged_parquet_row_group_and_truncated_gzip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "pairs.parquet"
    rows = [{"prompt": f"p{i}", "chosen": "a" * 50 + str(i), "rejected": "b" * 50 + str(i)} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10, compression="none")
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(1).column(1)
    data = bytearray(path.read_bytes())
    start = column.data_page_offset
    data[start : start + 40] = b"\xff" * 40  # smash the page header of group 1
    path.write_bytes(bytes(data))
    result = _collect(path)
    assert len(result.records) == 30
    (problem,) = result.rejected
    assert problem.source == f"{path}[10]" and "row group 1 (rows 10-19)" in problem.reason

    gz = tmp_path / "cut.jsonl.gz"
    blob = gzip.compress((GOOD * 200).encode())
    gz.write_bytes(blob[: len(blob) // 2])
    result = _collect(gz)
    assert result.rejected and "could not read the file" in result.rejected[-1].reason


def test_one_bad_file_never_stops_the_others(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(GOOD)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"a": ' + "[" * 50000 + "]" * 50000 + "}\n")
    code = main(["data", "inspect", "--json", str(bad), str(deep), str(good), str(tmp_path / "missing.jsonl")])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    by_path = {entry["path"]: entry for entry in out["files"]}
    assert by_path[str(good)]["accepted"] == 1
    assert by_path[str(bad)]["rejected"] == 1 and by_path[str(deep)]["rejected"] == 1
    assert by_path[str(tmp_path / "missing.jsonl")]["problems"][0]["message"] == "no such file or directory"
    assert by_path[str(deep)]["problems"][0] == {"line": 1, "source": str(deep), "field": None,
                                                 "message": "JSON nested too deeply (expected at most 100 levels)"}


# ----------------------------------------------------------------------------- fuzz

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json = st.recursive(_json_leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=12)
_keys = st.sampled_from(["prompt", "chosen", "rejected", "completion", "label", "rating", "messages", "score", "scores",
                         "weight", "id", "objective", "winner", "model_a", "model_b", "response_0", "response_1",
                         "better_response_id", "instruction", "completions", "data", "meta", "snapshot", "q.responses"])
_rows = st.dictionaries(_keys | st.text(string.ascii_lowercase, max_size=5), _json, max_size=6)


def _check_file(path) -> None:
    report = inspect_sources([path])
    summary = report_json(report)
    for entry in summary["files"]:
        assert entry["accepted"] + entry["rejected"] == entry["rows_read"]
    result = report.result
    assert result.rows_total == result.rows_accepted + len(result.rejected)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz"]))
def test_fuzz_random_bytes_never_raise(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"f{suffix}"
    path.write_bytes(data)
    _check_file(path)


@FUZZ
@given(rows=st.lists(_rows | _json, min_size=1, max_size=5), as_list=st.booleans())
def test_fuzz_random_json_never_raises(tmp_path_factory, rows, as_list):
    directory = tmp_path_factory.mktemp("fuzzjson")
    if as_list:
        path = directory / "rows.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        path = directory / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _check_file(path)
    result = load_records(rows if all(isinstance(r, dict) for r in rows) else [{"x": 1}], on_invalid="collect")
    assert result.rows_total == result.rows_accepted + len(result.rejected)
