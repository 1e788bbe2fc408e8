"""Validation: every malformed row fails naming file, line and field; quarantine keeps a trace
of every rejected row; conflicts are found."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from feedalign.data import (
    FeedbackDataError,
    LabeledRecord,
    PairRecord,
    find_conflicts,
    load_many,
    load_records,
)
from feedalign.data.errors import RowError
from feedalign.data.validation import parse_label, parse_score

BAD = Path(__file__).parent / "bad"
OBJECTIVES = ("helpful", "harmless")

# file -> (line of the first problem or None for the whole file, field, words in the reason, rows in file)
CASES = {
    "invalid_json.jsonl": (2, None, "invalid JSON", 3),
    "wrong_type.jsonl": (2, "chosen", "expected a non-empty string, got int", 2),
    "missing_field.jsonl": (2, "rejected", "expected a non-empty string, got null or missing", 2),
    "empty_field.jsonl": (2, "completion", "got an empty string", 2),
    "unknown_objective.jsonl": (
        2,
        "objective",
        "unknown objective 'helpfull'; expected one of: harmless, helpful",
        2,
    ),
    "bad_label.jsonl": (2, "label", "got 'maybe'", 2),
    "bad_labels_dict.jsonl": (1, "labels.harmless", "got 'sometimes'", 1),
    "nan_score.jsonl": (2, "score", "expected a finite number, got nan", 2),
    "non_utf8.jsonl": (3, None, "not valid UTF-8", 3),
    "duplicate_ids.jsonl": (3, "id", "duplicate id 'a' (first seen at", 3),
    "chosen_equals_rejected.jsonl": (2, "rejected", "identical to 'chosen'", 2),
    "unknown_layout.jsonl": (
        1,
        None,
        "unrecognised columns (answer, question); map them: columns: {prompt: question, completion: answer} with kind:",
        1,
    ),
    "not_object.jsonl": (2, None, "expected an object", 2),
    "bad_messages.jsonl": (2, "messages", "expected the last message to have role 'assistant'", 2),
    "empty.jsonl": (None, None, "empty: no rows found", 0),
    "bad.csv": (4, "label", "got 'maybe'", 2),
    "ragged.csv": (3, None, "row has 2 cells, the header has 3 columns", 2),
}


def _copy_corpus(tmp_path: Path) -> Path:
    target = tmp_path / "bad"
    shutil.copytree(BAD, target)
    return target


def test_corpus_has_a_case_per_file():
    assert sorted(p.name for p in BAD.iterdir()) == sorted(set(CASES) | {"bad_list.json"})


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_error_names_file_line_and_field(name, monkeypatch):
    monkeypatch.chdir(BAD)
    line, field, words, _ = CASES[name]
    with pytest.raises(FeedbackDataError) as info:
        load_records(name, objectives=OBJECTIVES)
    err = info.value
    location = name if line is None else f"{name}:{line}"
    assert err.source == location and err.field == field
    prefix = f"{location}: field '{field}': " if field else f"{location}: "
    assert str(err).startswith(prefix) and words in str(err), str(err)


def test_error_message_format_matches_the_documented_example(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 11
        + '{"prompt": "p", "chosen": 3, "rejected": "b"}\n'
    )
    with pytest.raises(
        FeedbackDataError, match=r"pairs\.jsonl:12: field 'chosen': expected a non-empty string, got int$"
    ):
        load_records(path)


def test_json_list_item_error_names_line(monkeypatch):
    monkeypatch.chdir(BAD)
    with pytest.raises(FeedbackDataError) as info:
        load_records("bad_list.json")
    assert (info.value.source, info.value.field) == ("bad_list.json:3 (item 1)", "rejected")


@pytest.mark.parametrize("name", sorted(CASES))
def test_quarantine_writes_every_bad_row_and_counts_add_up(name, tmp_path):
    corpus = _copy_corpus(tmp_path)
    line, field, words, rows = CASES[name]
    result = load_records(corpus / name, on_invalid="quarantine", objectives=OBJECTIVES)
    quarantine = corpus / f"{name}.quarantine.jsonl"
    assert result.quarantine_files == [str(quarantine)]
    written = [json.loads(x) for x in quarantine.read_text(encoding="utf-8").splitlines()]
    assert len(written) == len(result.rejected) >= 1
    for entry, rej in zip(written, result.rejected, strict=True):
        assert entry["source"] == rej.source and entry["field"] == rej.field and entry["reason"] == rej.reason
        assert entry["reason"] and "raw" in entry
    first = written[0]
    assert first["source"] == (str(corpus / name) if line is None else f"{corpus / name}:{line}")
    assert words in first["reason"]
    if rows:  # a file-level problem (empty file) is one rejection for zero rows
        assert result.rows_accepted + len(result.rejected) == rows
    good_rows = rows - len(result.rejected)
    assert result.rows_accepted == max(good_rows, 0)


def test_quarantine_raw_keeps_the_row_and_paths_can_be_redirected(tmp_path):
    corpus = _copy_corpus(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = load_many(
        [corpus / "bad_label.jsonl", corpus / "wrong_type.jsonl"],
        on_invalid="quarantine",
        quarantine_path=out,
    )
    assert sorted(Path(p).name for p in result.quarantine_files) == [
        "bad_label.jsonl.quarantine.jsonl",
        "wrong_type.jsonl.quarantine.jsonl",
    ]
    entry = json.loads((out / "bad_label.jsonl.quarantine.jsonl").read_text())
    assert entry["raw"] == {"prompt": "p", "completion": "c", "label": "maybe"}
    single = tmp_path / "all_rejects.jsonl"
    result = load_many(
        [corpus / "bad_label.jsonl", corpus / "wrong_type.jsonl"],
        on_invalid="quarantine",
        quarantine_path=single,
    )
    assert result.quarantine_files == [str(single)] and len(single.read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="quarantine_path"):
        load_records([{"prompt": "p"}], on_invalid="quarantine")


def test_quarantine_of_a_mixed_file_accounts_for_every_line(tmp_path):
    lines = []
    for name in sorted(CASES):
        if name.endswith(".jsonl"):
            lines += (BAD / name).read_bytes().splitlines()
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = load_records(path, on_invalid="quarantine", objectives=OBJECTIVES)
    assert result.rows_accepted + len(result.rejected) == len(lines)
    written = (tmp_path / "mixed.jsonl.quarantine.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(written) == len(result.rejected)
    rejected_lines = {int(r.source.rsplit(":", 1)[1]) for r in result.rejected}
    accepted_lines = {int(r.source.rsplit(":", 1)[1]) for r in result.records}
    assert rejected_lines.isdisjoint(accepted_lines)
    assert len(rejected_lines | accepted_lines) == len(lines)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_huge_row_is_rejected_with_its_line(tmp_path, suffix):
    big = "x" * 500
    path = tmp_path / f"big{suffix}"
    if suffix == ".jsonl":
        path.write_text(
            '{"prompt": "p", "completion": "a", "label": 1}\n'
            + json.dumps({"prompt": "p", "completion": big, "label": 1})
            + "\n"
            + '{"prompt": "p", "completion": "b", "label": 0}\n'
        )
        where = f"{path}:2"
    elif suffix == ".csv":
        path.write_text(f"prompt,completion,label\np,a,1\np,{big},1\np,b,0\n")
        where = f"{path}:3"
    else:
        path.write_text(
            json.dumps([{"prompt": "p", "completion": c, "label": 1} for c in ("a", big, "b")], indent=1)
        )
        where = f"{path}:7 (item 1)"
    with pytest.raises(FeedbackDataError) as info:
        load_records(path, max_line_bytes=200)
    assert info.value.source == where and "over the limit of 200" in str(info.value)
    result = load_records(path, max_line_bytes=200, on_invalid="collect")
    assert [r.completion for r in result.records] == ["a", "b"] and len(result.rejected) == 1
    assert len(load_records(path).records) == 3  # the default limit is 16 MiB


def test_line_exactly_at_the_limit_is_accepted(tmp_path):
    row = json.dumps({"prompt": "p", "completion": "c", "label": 1})
    path = tmp_path / "edge.jsonl"
    path.write_text(row + "\n" + row)
    assert len(load_records(path, max_line_bytes=len(row)).records) == 2
    with pytest.raises(FeedbackDataError, match=":1: line is"):
        load_records(path, max_line_bytes=len(row) - 1)


def test_inf_score_wrong_scores_type_and_bool_score():
    for row, field in [
        ({"prompt": "p", "completion": "c", "score": float("inf")}, "score"),
        ({"prompt": "p", "completion": "c", "scores": {"helpful": float("-inf")}}, "scores.helpful"),
        ({"prompt": "p", "completion": "c", "scores": [1.0]}, "scores"),
        ({"prompt": "p", "completion": "c", "score": True}, "score"),
        ({"prompt": "p", "completion": "c", "scores": {"helpful": None}}, "scores"),
    ]:
        with pytest.raises(FeedbackDataError) as info:
            load_records([row])
        assert info.value.field == field and info.value.source == "rows[0]"


def test_conversational_shape_errors():
    user, bot = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    cases = [
        ({"prompt": "other", "chosen": [user, bot], "rejected": [user, bot | {"content": "b"}]}, "prompt"),
        ({"prompt": [user], "chosen": [user], "rejected": [bot]}, "chosen"),
        ({"chosen": [bot], "rejected": [bot | {"content": "b"}]}, "prompt"),  # no shared prefix
        ({"chosen": [user, bot], "rejected": [user, bot]}, "rejected"),  # identical conversations
        ({"prompt": [user], "chosen": [{"role": "assistant"}], "rejected": [bot]}, "chosen"),
        ({"messages": [bot], "label": 1}, "messages"),  # nothing before the reply
        ({"messages": [user, bot], "prompt": "q", "label": 1}, "prompt"),
    ]
    for row, field in cases:
        with pytest.raises(FeedbackDataError) as info:
            load_records([row])
        assert info.value.field == field, (row, str(info.value))


def test_parse_label_rejects_everything_else():
    for value in ("maybe", 2, -2, 0.5, 1.0, None, [], "", "truthy"):
        with pytest.raises(RowError):
            parse_label(value)
    assert parse_score(3) == 3.0
    with pytest.raises(RowError, match="got str '0.5'"):
        parse_score("0.5")


def test_find_conflicts_labels_and_pair_orders(tmp_path):
    rows = [
        {"prompt": "p", "completion": "a", "label": "up", "objective": "helpful"},
        {"prompt": "p", "completion": "a", "label": "up", "objective": "harmless"},
        {"prompt": "p", "completion": "a", "label": "down", "objective": "helpful"},
        {"prompt": "p", "chosen": "x", "rejected": "y"},
        {"prompt": "p", "chosen": "y", "rejected": "x"},
        {"prompt": "p", "chosen": "x", "rejected": "z"},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    for mode in ("error", "quarantine"):
        result = load_records(path, on_invalid=mode)
        assert len(result.records) == 6 and result.rejected == []  # kept in every mode
        assert [(c.kind, c.objective, c.sources) for c in result.conflicts] == [
            ("label", "helpful", (f"{path}:1", f"{path}:3")),
            ("pair", None, (f"{path}:4", f"{path}:5")),
        ]
    direct = find_conflicts(
        [LabeledRecord("p", "a", True), LabeledRecord("p", "a", True), PairRecord("p", "x", "y")]
    )
    assert direct == []


def test_bad_options_fail_fast():
    with pytest.raises(ValueError, match="on_invalid"):
        load_records([{}], on_invalid="skip")
    with pytest.raises(ValueError, match="objectives"):
        load_records([{}], objectives=["helpful", ""])
    with pytest.raises(TypeError):
        load_records(42)


def test_non_utf8_in_csv_and_json_names_the_line(tmp_path):
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes(b"prompt,completion,label\np,ok,1\np,caf\xe9,1\np,fine,0\n")
    with pytest.raises(FeedbackDataError, match=r"latin1\.csv:3: not valid UTF-8"):
        load_records(csv_path)
    result = load_records(csv_path, on_invalid="collect")
    assert [r.completion for r in result.records] == ["ok", "fine"]
    assert result.rejected[0].raw == ["p", "caf\\xe9", "1"]
    json_path = tmp_path / "latin1.json"
    json_path.write_bytes(b'[\n{"prompt": "p", "completion": "ok", "label": 1},\n{"prompt": "caf\xe9"}\n]')
    with pytest.raises(FeedbackDataError, match=r"latin1\.json:3: not valid UTF-8"):
        load_records(json_path)


def test_csv_header_and_cell_problems(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("prompt,prompt,label\np,q,1\n")
    with pytest.raises(FeedbackDataError, match=r"dup\.csv:1: header must name every column once"):
        load_records(path)
    path = tmp_path / "cells.csv"
    path.write_text('prompt,completion,scores\np,c,"{""helpful"": 1"\np,d,oops\n')
    with pytest.raises(FeedbackDataError) as info:
        load_records(path)
    assert (info.value.source, info.value.field) == (f"{path}:2", "scores")
    path.write_text("prompt,completion,score\np,c,high\n")
    with pytest.raises(
        FeedbackDataError, match=r"cells\.csv:2: field 'score': expected a finite number, got str 'high'"
    ):
        load_records(path)
    path = tmp_path / "header_only.csv"
    path.write_text("prompt,completion,label\n\n")
    with pytest.raises(FeedbackDataError, match=r"header_only\.csv: empty"):
        load_records(path)
    path.write_text("prompt,completion,label\n,,\n")
    with pytest.raises(FeedbackDataError, match=r"header_only\.csv:2: empty row"):
        load_records(path)
    with pytest.raises(FeedbackDataError, match=r"rows\[0\]: empty row"):
        load_records([{}])


def test_bom_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "win.jsonl"
    row = '{"prompt": "p", "completion": "c", "label": "yes"}'
    path.write_bytes(
        b"\xef\xbb\xbf" + row.encode() + b"\r\n\r\n   \n" + row.replace('"c"', '"d"').encode() + b"\r\n"
    )
    result = load_records(path)
    assert [(r.completion, r.source) for r in result.records] == [("c", f"{path}:1"), ("d", f"{path}:4")]
    csv_path = tmp_path / "win.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfprompt,completion,label\r\n\r\np,c,up\r\n")
    assert [r.source for r in load_records(csv_path).records] == [f"{csv_path}:3"]


def test_truncated_json_list_keeps_earlier_items_in_collect_mode(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('[{"prompt": "p", "completion": "a", "label": 1},\n {"prompt": "p", "comp')
    result = load_records(path, on_invalid="collect")
    assert [r.completion for r in result.records] == ["a"]
    assert (
        result.rejected[0].source == f"{path}:2 (item 1)"
        and "later items not read" in result.rejected[0].reason
    )
