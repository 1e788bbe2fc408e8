"""Loaders: every format round-trips, every accepted column convention gives the right records."""

from __future__ import annotations

import csv
import json

import pytest

from feedalign.data import (
    FeedbackDataError,
    LabeledRecord,
    PairRecord,
    ScoredRecord,
    load_many,
    load_records,
    record_to_row,
    render_messages,
    save_jsonl,
)
from feedalign.data.messages import split_conversation

RECORDS = [
    PairRecord("What is 2+2?", "4", "5"),
    PairRecord("Name a colour", "blue", "seven", objective="helpful"),
    LabeledRecord("Say hi", "hi", True),
    LabeledRecord("Say hi", "go away", False, objective="harmless"),
    ScoredRecord("Rate me", "fine", {"helpful": 0.5, "harmless": -1.25}),
]


def _same(loaded, expected):
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected, strict=True):
        assert type(got) is type(want)
        assert {k: v for k, v in vars(got).items() if k != "source"} == {
            k: v for k, v in vars(want).items() if k != "source"
        }


def test_jsonl_round_trip_keeps_records_and_locations(tmp_path):
    path = tmp_path / "mixed.jsonl"
    save_jsonl(RECORDS, path)
    result = load_records(path)
    _same(result.records, RECORDS)
    assert [r.source for r in result.records] == [f"{path}:{i}" for i in range(1, 6)]
    assert result.rows_accepted == 5 and result.rejected == []


def test_json_list_round_trip_reports_item_lines(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([record_to_row(r) for r in RECORDS], indent=2))
    result = load_records(path)
    _same(result.records, RECORDS)
    assert result.records[0].source == f"{path}:2 (item 0)"


def test_json_file_with_one_object_per_line_is_read_as_jsonl(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text("\n".join(json.dumps(record_to_row(r)) for r in RECORDS))
    _same(load_records(path).records, RECORDS)


def test_csv_round_trip_with_text_labels_and_json_cells(tmp_path):
    path = tmp_path / "mixed.csv"
    columns = ["id", "prompt", "chosen", "rejected", "completion", "label", "scores", "objective"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for rec in RECORDS:
            row = record_to_row(rec)
            if "label" in row:
                row["label"] = "up" if row["label"] else "down"
            if "scores" in row:
                row["scores"] = json.dumps(row["scores"])
            writer.writerow(row)
    _same(load_records(path).records, RECORDS)


def test_csv_score_cell_is_a_number_and_multiline_cells_keep_start_line(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text('prompt,completion,score\n"a\nb",c,0.25\nd,e,-2\n')
    result = load_records(path)
    assert [r.scores for r in result.records] == [{"score": 0.25}, {"score": -2.0}]
    assert [r.source for r in result.records] == [f"{path}:2", f"{path}:4"]
    assert result.records[0].prompt == "a\nb"


def test_parquet_round_trip_uses_row_indices(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "pairs.parquet"
    pairs = [r for r in RECORDS if isinstance(r, PairRecord)]
    pq.write_table(pa.Table.from_pylist([record_to_row(r) for r in pairs]), path)
    result = load_records(path)
    _same(result.records, pairs)
    assert [r.source for r in result.records] == [f"{path}[0]", f"{path}[1]"]


def test_parquet_nan_score_is_rejected_with_row_index(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "scores.parquet"
    rows = [
        {"prompt": "p", "completion": "a", "score": 1.0},
        {"prompt": "p", "completion": "b", "score": float("nan")},
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(FeedbackDataError) as info:
        load_records(path)
    assert (info.value.source, info.value.field) == (f"{path}[1]", "score")


def test_hf_dataset_in_memory_dict_and_load_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    labeled = [r for r in RECORDS if isinstance(r, LabeledRecord)]
    ds = datasets.Dataset.from_list([record_to_row(r) for r in labeled])
    result = load_records(ds)
    _same(result.records, labeled)
    assert result.records[1].source == "dataset[1]"

    splits = datasets.DatasetDict({"train": ds, "test": ds.select([0])})
    assert [r.source for r in load_records(splits).records] == ["dataset:train[0]", "dataset:train[1]"]
    with pytest.raises(FeedbackDataError, match="split"):
        load_records(datasets.DatasetDict({"a": ds, "b": ds}))
    with pytest.raises(FeedbackDataError, match="no split 'dev'"):
        load_records(splits, split="dev")
    assert [r.source for r in load_records(splits, split="test").records] == ["dataset:test[0]"]

    ds.save_to_disk(str(tmp_path / "hf_single"))
    _same(load_records(tmp_path / "hf_single").records, labeled)
    splits.save_to_disk(str(tmp_path / "hf_dict"))
    loaded = load_records(str(tmp_path / "hf_dict"), split="train")
    _same(loaded.records, labeled)
    assert loaded.records[0].source == f"{tmp_path / 'hf_dict'}:train[0]"


def test_hf_multi_objective_labels_with_missing_keys(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [
        {"prompt": "p", "completion": "a", "labels": {"helpful": True, "harmless": False}},
        {"prompt": "p", "completion": "b", "labels": {"helpful": False}},  # harmless not rated -> None
    ]
    result = load_records(datasets.Dataset.from_list(rows), objectives=["helpful", "harmless"])
    got = [(r.completion, r.objective, r.label) for r in result.records]
    assert got == [("a", "helpful", True), ("a", "harmless", False), ("b", "helpful", False)]
    assert result.rows_accepted == 2


def test_trl_conversational_pair():
    row = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon."}],
    }
    (rec,) = load_records([row]).records
    assert rec.prompt == "<|system|>\nBe brief.\n<|user|>\nCapital of France?\n<|assistant|>\n"
    assert (rec.chosen, rec.rejected) == ("Paris.\n", "Lyon.\n")
    assert rec.prompt + rec.chosen == render_messages(row["prompt"] + row["chosen"])


def test_implicit_prompt_is_the_shared_prefix():
    user = {"role": "user", "content": "2+2?"}
    row = {
        "chosen": [user, {"role": "assistant", "content": "4"}],
        "rejected": [user, {"role": "assistant", "content": "5"}],
    }
    (rec,) = load_records([row]).records
    assert (rec.prompt, rec.chosen, rec.rejected) == ("<|user|>\n2+2?\n<|assistant|>\n", "4\n", "5\n")


def test_text_prompt_with_conversational_replies_or_full_conversations():
    user, bot = {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}
    wrong = {"role": "assistant", "content": "5"}
    expected = ("<|user|>\n2+2?\n<|assistant|>\n", "4\n", "5\n")
    replies_only = {"prompt": "2+2?", "chosen": [bot], "rejected": [wrong]}
    # UltraFeedback style: text prompt, full conversations, and a `messages` copy of chosen
    full = {"prompt": "2+2?", "chosen": [user, bot], "rejected": [user, wrong], "messages": [user, bot]}
    repeated = {"prompt": [user], "chosen": [user, bot], "rejected": [user, wrong]}
    for row in (replies_only, full, repeated):
        (rec,) = load_records([row]).records
        assert (rec.prompt, rec.chosen, rec.rejected) == expected


def test_multi_turn_completion_renders_later_turns():
    prompt, completion = split_conversation(
        [{"role": "user", "content": "a"}],
        [
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ],
        "chosen",
    )
    assert completion == "b\n<|user|>\nc\n<|assistant|>\nd\n"
    assert prompt + completion == render_messages(
        [{"role": "user", "content": r} if r in "ac" else {"role": "assistant", "content": r} for r in "abcd"]
    )


def test_messages_column_last_assistant_is_completion():
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"},
    ]
    (rec,) = load_records([{"messages": msgs, "label": "thumbs_down", "objective": "helpful"}]).records
    assert rec == LabeledRecord(
        render_messages(msgs[:3], add_generation_prompt=True), "ciao\n", False, "helpful", rec.id, "rows[0]"
    )


@pytest.mark.parametrize(
    "value,expected",
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("TRUE", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("Up", True),
        ("down", False),
        ("yes", True),
        ("no", False),
        ("thumbs_up", True),
        ("thumbs_down", False),
        ("good", True),
        (" bad ", False),
    ],
)
def test_label_forms(value, expected):
    (rec,) = load_records([{"prompt": "p", "completion": "c", "label": value}]).records
    assert rec.label is expected


def test_scored_rows_single_and_multi_objective():
    rows = [
        {"prompt": "p", "completion": "a", "score": 3},
        {"prompt": "p", "completion": "b", "score": -1.5, "objective": "helpful"},
        {"prompt": "p", "completion": "c", "scores": {"helpful": 1, "harmless": None, "honest": 0.5}},
    ]
    result = load_records(rows)
    assert [r.scores for r in result.records] == [
        {"score": 3.0},
        {"helpful": -1.5},
        {"helpful": 1.0, "honest": 0.5},
    ]
    assert result.counts() == {"scored": {"score": 1, "helpful": 2, "honest": 1}}


def test_pairs_and_labels_with_objective_field_and_counts():
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "objective": "helpful"},
        {"prompt": "p", "chosen": "a", "rejected": "c", "objective": "harmless"},
        {"prompt": "p", "completion": "a", "label": True, "objective": "helpful"},
        {"prompt": "p", "completion": "b", "label": False, "objective": "helpful"},
        {"prompt": "q", "completion": "x", "label": True},
    ]
    assert load_records(rows).counts() == {
        "pair": {"helpful": 1, "harmless": 1},
        "positive": {"helpful": 1, None: 1},
        "negative": {"helpful": 1},
    }


def test_ids_explicit_hashed_and_exact_duplicates():
    rows = [
        {"id": 7, "prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "completion": "a", "label": True},
        {"prompt": "p", "completion": "a", "label": True},
        {"id": "m", "prompt": "p", "completion": "a", "labels": {"helpful": True, "harmless": False}},
    ]
    records = load_records(rows).records
    hashed = LabeledRecord("p", "a", True).id
    assert [r.id for r in records] == ["7", hashed, f"{hashed}-2", "m/helpful", "m/harmless"]
    assert load_records(rows).records == records  # stable


def test_kind_forces_layout_and_allows_label_free_positive_sets():
    rows = [
        {"prompt": "p", "completion": "good answer"},
        {"prompt": "q", "completion": "fine", "label": "yes"},
    ]
    records = load_records(rows, kind="positive").records
    assert [(r.completion, r.label) for r in records] == [("good answer", True), ("fine", True)]
    assert [r.label for r in load_records(rows[:1], kind="negative").records] == [False]
    with pytest.raises(FeedbackDataError, match="kind='positive'"):
        load_records(rows[:1])
    with pytest.raises(FeedbackDataError, match=r"rows\[1\]: field 'label': expected False"):
        load_records(rows, kind="negative")
    both = [{"prompt": "p", "completion": "c", "label": True, "score": 0.3}]
    with pytest.raises(FeedbackDataError, match="ambiguous"):
        load_records(both)
    assert isinstance(load_records(both, kind="scored").records[0], ScoredRecord)
    assert isinstance(load_records(both, kind="labeled").records[0], LabeledRecord)
    with pytest.raises(ValueError, match="unknown feedback kind"):
        load_records(both, kind="thumbs")


def test_load_many_checks_ids_across_files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": "x", "prompt": "p", "chosen": "a", "rejected": "b"}\n')
    b.write_text(
        '{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"id": "x", "prompt": "q", "chosen": "c", "rejected": "d"}\n'
    )
    with pytest.raises(FeedbackDataError) as info:
        load_many([a, b])
    assert info.value.source == f"{b}:2" and info.value.field == "id" and f"{a}:1" in str(info.value)


def test_missing_and_unsupported_sources(tmp_path):
    with pytest.raises(FeedbackDataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(FeedbackDataError, match=r"unsupported file type '\.txt'.*\.jsonl"):
        load_records(tmp_path / "x.txt")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(FeedbackDataError, match="save_to_disk"):
        load_records(tmp_path / "plain_dir")


def test_render_messages_template():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert render_messages(msgs) == "<|system|>\ns\n<|user|>\nu\n"
    assert render_messages(msgs, add_generation_prompt=True) == "<|system|>\ns\n<|user|>\nu\n<|assistant|>\n"
    assert render_messages([]) == ""
