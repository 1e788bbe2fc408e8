"""Format presets: each published dataset, in its own schema and file format, is read unchanged
and gives the objectives named by the dataset."""

from __future__ import annotations

import json

import pytest

from feedalign.cli.main import main
from feedalign.data import LabeledRecord, PairRecord, load_records
from feedalign.data.errors import FeedbackDataError
from feedalign.data.formats import detect, list_presets
from feedalign.data.messages import render_messages

import published_schemas as published


def _inspect_json(capsys, *args) -> dict:
    code = main(["data", "inspect", "--json", *map(str, args)])
    out = json.loads(capsys.readouterr().out)
    for entry in out["files"]:
        assert entry["accepted"] + entry["rejected"] == entry["rows_read"]
    return {"code": code, **out}


def _counts(entry: dict) -> dict:
    return {(c["kind"], c["objective"]): c for c in entry["counts"]}


def test_every_preset_is_listed():
    assert set(list_presets()) >= {
        "trl", "thumbs", "hh-rlhf", "ultrafeedback", "pku-saferlhf", "helpsteer2", "arena", "argilla", "openwebui"
    }


def test_hh_rlhf_prompt_is_cut_at_turn_boundaries(tmp_path, capsys):
    path = published.hh_rlhf(tmp_path)
    records = load_records(path).records
    first = records[0]
    user = [{"role": "user", "content": "What is a good name for a cat?"}]
    # The transcripts share the characters "Sure, " inside the reply: the prompt still ends at the turn.
    assert first.prompt == render_messages(user, add_generation_prompt=True)
    assert (first.chosen, first.rejected) == ("Sure, how about Whiskers?\n", "Sure, no idea.\n")
    multi = records[1]
    assert multi.prompt.count("<|user|>") == 2 and multi.prompt.endswith("<|assistant|>\n")
    assert multi.chosen.startswith("Why did the chicken")
    report = _inspect_json(capsys, path)
    (entry,) = report["files"]
    assert (entry["format"], entry["accepted"], entry["rejected"], entry["ignored_columns"]) == ("hh-rlhf", 3, 0, [])
    assert _counts(entry)[("pair", None)]["n"] == 3


def test_ultrafeedback_raw_gives_pairs_per_aspect_and_skips_na(tmp_path, capsys):
    directory = published.ultrafeedback(tmp_path)
    result = load_records(directory)
    by_objective = {}
    for rec in result.records:
        by_objective.setdefault(rec.objective, []).append(rec)
    assert set(by_objective) == {"helpfulness", "honesty", "instruction_following", "truthfulness"}
    # honesty: "N/A" for "9" -> only 7 vs 2 (5 > 4) in row 1; row 2 ties (5 == 5)
    assert [(r.chosen, r.rejected) for r in by_objective["honesty"]] == [("7", "2")]
    # helpfulness compares numbers, not strings: 5 > 4 > 2 and 4 > 1
    assert {(r.chosen, r.rejected) for r in by_objective["helpfulness"]} == {("7", "9"), ("7", "2"), ("2", "9"), ("Hello!", "Bye.")}
    (stats,) = result.per_source
    assert stats.format == "ultrafeedback" and stats.unrated == 2
    assert stats.ignored_columns == {"source", "models", "correct_answers", "incorrect_answers"}
    report = _inspect_json(capsys, directory)
    (entry,) = report["files"]
    assert entry["format"] == "ultrafeedback" and entry["unrated"] == 2 and entry["ties"] >= 1
    assert _counts(entry)[("pair", "truthfulness")]["n"] == 2


def test_pku_saferlhf_helpful_and_harmless_from_save_to_disk_splits(tmp_path, capsys):
    path = published.pku_saferlhf(tmp_path)
    result = load_records(path)  # the train split by default
    assert result.sources == [f"{path}:train"]
    pairs = [r for r in result.records if isinstance(r, PairRecord)]
    thumbs = [r for r in result.records if isinstance(r, LabeledRecord)]
    helpful = [(r.chosen, r.rejected) for r in pairs if r.objective == "helpful"]
    harmless = [(r.chosen, r.rejected) for r in pairs if r.objective == "harmless"]
    assert helpful[0] == ("Use a tension wrench and a pick.", "Ask a locksmith.")
    assert harmless[0] == ("Ask a locksmith.", "Use a tension wrench and a pick.")
    assert len(helpful) == len(harmless) == 3
    assert [(r.completion, r.label) for r in thumbs[:2]] == [("Ask a locksmith.", True), ("Use a tension wrench and a pick.", False)]
    assert {r.objective for r in thumbs} == {"harmless"}
    (stats,) = result.per_source
    assert stats.format == "pku-saferlhf" and "response_0_severity_level" in stats.ignored_columns
    assert len(load_records(path, split="test").records) == 4
    (entry,) = _inspect_json(capsys, path)["files"]
    counts = _counts(entry)
    assert counts[("labeled", "harmless")] == {"kind": "labeled", "objective": "harmless", "n": 6, "up": 4, "down": 2}
    assert counts[("pair", "helpful")]["n"] == 3 and entry["rows_read"] == 3


def test_helpsteer2_pairs_per_attribute_within_a_prompt(tmp_path):
    result = load_records(published.helpsteer2(tmp_path))
    objectives = {r.objective for r in result.records}
    assert objectives == {"helpfulness", "correctness", "coherence", "verbosity"}  # complexity ties everywhere
    helpful = {(r.prompt, r.chosen, r.rejected) for r in result.records if r.objective == "helpfulness"}
    assert helpful == {("What is 2+2?", "4", "22")}  # gravity: 3 == 3 is a tie, "Say hi." is alone
    (stats,) = result.per_source
    assert stats.format == "helpsteer2" and stats.ties == 4 and stats.alone == 5
    assert len(result.ties) == 6  # 2+2: complexity, verbosity; gravity: helpfulness, correctness, coherence, complexity
    verbose = [(r.chosen, r.rejected) for r in result.records if r.objective == "verbosity"]
    assert verbose == [("Things fall because the Earth pulls them, in proportion to mass.", "Mass attracts mass.")]


def test_helpsteer2_best_vs_worst_min_gap_and_labels(tmp_path):
    path = published.helpsteer2(tmp_path)
    wide = load_records(path, scores={"to": "pairs", "min_gap": 3}).records
    assert {(r.objective, r.chosen) for r in wide} == {("helpfulness", "4"), ("correctness", "4")}
    labels = load_records(path, scores={"to": "labels", "threshold": 3}).records
    assert all(isinstance(r, LabeledRecord) for r in labels)
    helpful = {(r.completion, r.label) for r in labels if r.objective == "helpfulness"}
    assert ("22", False) in helpful and ("4", True) in helpful and len(labels) == 25


def test_arena_lmsys_parquet_shards_and_ties(tmp_path, capsys):
    path = published.arena_lmsys(tmp_path)
    result = load_records(path.parent.parent)  # the dataset directory with data/train-*.parquet
    assert [(r.chosen, r.rejected) for r in result.records] == [("Paris.\n", "Lyon.\n"), ("4\n", "5\n")]
    assert len(result.ties) == 2 and all(t.tie for t in result.ties)
    kept = load_records(path, ties="keep").records
    assert sum(r.tie for r in kept) == 2
    (entry,) = _inspect_json(capsys, path)["files"]
    assert entry["format"] == "arena" and entry["ties"] == 2 and entry["accepted"] == 4
    assert "judge" in entry["ignored_columns"] and "winner" not in entry["ignored_columns"]


def test_arena_kaggle_layout_json_encoded_turns(tmp_path):
    result = load_records(published.arena_kaggle(tmp_path))
    first, second = result.records
    assert first.chosen == "It is a complex question.\n" and first.rejected == "Yes.\n"
    assert second.prompt.count("<|user|>") == 1  # turn 2 belongs to each side's completion
    assert second.chosen.startswith("They are the same.") and "<|user|>\nWhich one comes first?" in second.chosen
    assert len(result.ties) == 1 and result.per_source[0].format == "arena"


def test_argilla_export_submitted_responses_labels_and_rankings(tmp_path):
    result = load_records(published.argilla(tmp_path))
    pref = [(r.chosen, r.rejected) for r in result.records if r.objective == "preference"]
    assert pref == [("Mango.", "Rocks."), ("Mango.", "Rocks."), ("Hey.", "Hi!")]  # the draft is skipped
    ranking = [(r.chosen, r.rejected) for r in result.records if r.objective == "ranking"]
    assert ranking == [("Mango.", "Rocks.")]
    (stats,) = result.per_source
    assert stats.format == "argilla" and stats.unrated == 1 and stats.ties == 1
    assert stats.ignored_columns == {"topic", "preference.suggestion"}


def test_openwebui_export(tmp_path, capsys):
    path = published.openwebui(tmp_path)
    records = load_records(path).records
    assert [(r.completion, r.label) for r in records] == [("Rome.\n", True), ("Hund.\n", False), ("5\n", False)]
    assert records[0].prompt == render_messages([{"role": "user", "content": "What is the capital of Italy?"}], add_generation_prompt=True)
    (entry,) = _inspect_json(capsys, path)["files"]
    assert entry["format"] == "openwebui" and _counts(entry)[("labeled", None)]["down"] == 2
    assert {"user_id", "version", "type", "created_at"} <= set(entry["ignored_columns"])


def test_thumbs_log_rating_minus_one_gives_exactly_as_many_downs(tmp_path, capsys):
    path = published.thumbs_log(tmp_path)
    records = load_records(path).records
    assert sum(not r.label for r in records) == 3 and sum(r.label for r in records) == 2
    (entry,) = _inspect_json(capsys, path)["files"]
    assert entry["format"] == "thumbs" and entry["ignored_columns"] == ["session"]
    assert _counts(entry)[("labeled", None)] == {"kind": "labeled", "objective": None, "n": 5, "up": 2, "down": 3}


def test_kind_positive_never_overrides_a_feedback_column(tmp_path):
    path = published.thumbs_log(tmp_path)
    with pytest.raises(FeedbackDataError, match="field 'rating': holds feedback.*columns: \\{label: rating\\}"):
        load_records(path, kind="positive")
    rows = [{"prompt": "p", "completion": "c", "feedback": "thumbs_down"}]
    assert [r.label for r in load_records(rows).records] == [False]
    with pytest.raises(FeedbackDataError, match="field 'feedback': holds feedback"):
        load_records(rows, kind="positive")
    # a rating scale is not a thumb: the row is rejected with a fix that fits this file
    with pytest.raises(FeedbackDataError, match="expected a thumbs rating 1 or -1, got 4.*columns: \\{score: rating\\}"):
        load_records([{"prompt": "p", "completion": "c", "rating": 4}])


def test_feedback_label_column_and_minus_one_labels():
    rows = [{"prompt": "p", "completion": "a", "label": 1}, {"prompt": "p", "completion": "b", "label": -1}]
    assert [r.label for r in load_records(rows).records] == [True, False]
    rows = [{"prompt": "p", "completion": "a", "thumbs": "thumbs_up"}, {"prompt": "q", "completion": "b", "thumbs": "thumbs_down"}]
    assert [r.label for r in load_records(rows).records] == [True, False]


def test_columns_and_label_values_mapping(tmp_path, capsys):
    rows = [
        {"question": "q1", "answer": "a1", "feedback": "👍", "confidence": 0.5, "extra": 1},
        {"question": "q2", "answer": "a2", "feedback": "👎", "confidence": 2, "extra": 2},
    ]
    columns = {"prompt": "question", "completion": "answer", "label": "feedback", "weight": "confidence"}
    records = load_records(rows, columns=columns, label_values={"up": ["👍"], "down": ["👎"]}).records
    assert [(r.prompt, r.completion, r.label, r.weight) for r in records] == [("q1", "a1", True, 0.5), ("q2", "a2", False, 2.0)]
    with pytest.raises(FeedbackDataError, match="rows\\[0\\]: field 'label': expected one of label_values"):
        load_records(rows, columns=columns, label_values={"up": ["yes"], "down": ["no"]})
    with pytest.raises(FeedbackDataError, match="field 'answer': missing"):
        load_records([{"question": "q"}], columns=columns)
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code = main(["data", "inspect", "--json", str(path), "--columns", "prompt=question,completion=answer,label=feedback",
                 "--label-values", "up=👍;down=👎"])
    (entry,) = json.loads(capsys.readouterr().out)["files"]
    assert code == 0 and entry["ignored_columns"] == ["confidence", "extra"]
    assert _counts(entry)[("labeled", None)]["down"] == 1


def test_identical_pair_says_identical_and_is_quarantined(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "a"}\n{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    result = load_records(path, on_invalid="quarantine")
    assert len(result.records) == 1 and "identical" in result.rejected[0].reason
    with pytest.raises(FeedbackDataError, match="identical"):
        load_records(path)


def test_objective_filter_rejects_case_only_mismatch():
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "objective": "Helpful"},
        {"prompt": "p", "chosen": "a", "rejected": "c", "objective": "helpful"},
        {"prompt": "p", "chosen": "a", "rejected": "d", "objective": "harmless"},
        {"prompt": "p", "chosen": "a", "rejected": "e"},
    ]
    result = load_records(rows, objective="helpful", on_invalid="collect")
    assert [r.rejected for r in result.records] == ["c", "e"] and {r.objective for r in result.records} == {"helpful"}
    assert "differs only in case" in result.rejected[0].reason and result.per_source[0].other_objectives == 1


def test_detection_recognises_each_layout():
    cases = {
        "pku-saferlhf": published.pku_saferlhf_rows()[0],
        "thumbs": {"prompt": "p", "response": "r", "rating": 1},
        "trl": {"prompt": "p", "chosen": "a", "rejected": "b"},
        "hh-rlhf": {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
        "helpsteer2": {"prompt": "p", "response": "r", "helpfulness": 1, "correctness": 1, "coherence": 1, "complexity": 1, "verbosity": 1},
        "arena": {"model_a": "x", "model_b": "y", "winner": "tie"},
        "openwebui": {"data": {}, "meta": {}, "snapshot": {}},
        "argilla": {"prompt": "p", "q.responses": []},
        "ultrafeedback": {"instruction": "i", "completions": []},
    }
    assert {name: detect(row).name for name, row in cases.items()} == {name: name for name in cases}


def test_unknown_format_is_a_clear_error(tmp_path, capsys):
    path = published.thumbs_log(tmp_path)
    assert main(["data", "inspect", str(path), "--format", "nope"]) == 2
    assert "unknown format 'nope'; expected one of" in capsys.readouterr().out


def test_ranked_completions_become_pairs_and_bare_scores_stay_unnamed():
    rows = [{"prompt": "p", "completions": ["a", "b", "c"], "ranks": [2, 1, 2]}]
    result = load_records(rows)
    assert result.per_source[0].format == "ranked"
    assert {(r.chosen, r.rejected, r.objective) for r in result.records} == {("b", "a", None), ("b", "c", None)}
    assert len(result.ties) == 1  # a and c share rank 2
    scored = [{"prompt": "q", "completion": "x", "score": 0.2}, {"prompt": "q", "completion": "y", "score": 0.9}]
    assert [(r.chosen, r.objective) for r in load_records(scored, scores="pairs").records] == [("y", None)]
    with pytest.raises(FeedbackDataError, match="field 'ranks': expected a list of 3 numbers"):
        load_records([{"prompt": "p", "completions": ["a", "b", "c"], "ranks": [1, 2]}])


def test_export_ids_that_name_annotations_are_not_record_ids():
    # two Argilla records (ids r1, r2) with the same verdict: two pairs, no duplicate-id error
    rows = [{"id": f"r{i}", "prompt": "p", "response1": "a", "response2": "b", "q.responses": ["response1"]} for i in (1, 2)]
    records = load_records(rows).records
    assert len(records) == 2 and records[0].id != records[1].id


def test_unrecognised_columns_suggest_a_mapping_that_fits_the_file():
    rows = [{"question": "q", "answer": "a", "feedback": "thumbs_down"}]
    with pytest.raises(FeedbackDataError, match=r"map them: columns: \{prompt: question, completion: answer, label: feedback\}"):
        load_records(rows)
    columns = {"prompt": "question", "completion": "answer", "label": "feedback"}
    assert [r.label for r in load_records(rows, columns=columns).records] == [False]  # the suggestion works


def test_argilla_free_text_questions_are_ignored_not_errors():
    rows = [{"prompt": "p", "response1": "a", "response2": "b", "preference.responses": ["response2"],
             "comment.responses": ["response 1 rambles"], "comment.responses.users": ["u1"]}]
    result = load_records(rows)
    assert [(r.chosen, r.rejected, r.objective) for r in result.records] == [("b", "a", "preference")]
    assert result.per_source[0].ignored_columns == {"comment.responses", "comment.responses.users"}


def test_truncation_marks_are_read_not_reported_as_ignored(tmp_path, capsys):
    """``chosen_truncated`` / ``rejected_truncated`` (pairs) and ``truncated`` (thumbs logs) are
    applied (the completion is tokenised without EOS), so inspect must not list them as ignored."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "chosen_truncated": True,
                                 "rejected_truncated": False}) + "\n")
    thumbs = tmp_path / "thumbs.jsonl"
    thumbs.write_text(json.dumps({"prompt": "q", "response": "a", "rating": 1, "truncated": True}) + "\n")
    (pair,) = load_records(pairs).records
    (thumb,) = load_records(thumbs).records
    assert pair.chosen_truncated and not pair.rejected_truncated and thumb.truncated
    files = _inspect_json(capsys, pairs, thumbs)["files"]
    assert [e["ignored_columns"] for e in files] == [[], []]
