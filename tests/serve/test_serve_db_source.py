"""A feedback database as a training source (``path: sqlite:///...``) and ``feedalign data export``."""

import json

import pytest
import yaml

from feedalign.cli.main import main
from feedalign.data import load_records
from feedalign.data.db_source import is_database_url, parse_database_url
from feedalign.data.errors import FeedbackDataError
from feedalign.data.records import LabeledRecord, PairRecord
from feedalign.serve.storage import FeedbackStore, Item, Submission

WORDS = ["write about fruit with apple kiwi plum fig :", "write about animal with cat dog fox owl :"]


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "fb.db"
    store = FeedbackStore(path)
    store.add_items([
        Item("p0", WORDS[0], "apple , kiwi .", "ok .", round=1),
        Item("p1", WORDS[1], "cat .", "i like cat , dog and fox too .", round=2),
        Item("s0", WORDS[0], "i like fig .", None, round=2),
    ])
    store.submit(Submission("u1", "p0", "alice", {"helpful": "a", "concise": "b"}, "a", "good"))
    store.submit(Submission("u2", "p1", "alice", {"helpful": "b", "concise": "tie"}, "b"))
    store.submit(Submission("u3", "s0", "bob", {"helpful": "up", "concise": "down"}))
    store.submit(Submission("u4", "p0", "bob", {"helpful": "both_bad"}, "b"))
    store.close()
    return path


def test_url_parsing():
    q = parse_database_url("sqlite:////tmp/x.db?objective=helpful,concise&round=1,2&annotator=al&kind=pair")
    assert (q.url, q.objectives, q.rounds, q.annotators, q.kind) == (
        "sqlite:////tmp/x.db", ["helpful", "concise"], [1, 2], ["al"], "pair")
    assert is_database_url("postgresql+psycopg://u@h/db") and not is_database_url("data/x.jsonl")
    with pytest.raises(ValueError, match="round"):
        parse_database_url("sqlite:///x.db?round=one")
    with pytest.raises(ValueError, match="kind"):
        parse_database_url("sqlite:///x.db?kind=thumbs")


def test_loader_reads_answers_as_records(db):
    records = load_records(f"sqlite:///{db}").records
    pairs = [r for r in records if isinstance(r, PairRecord)]
    labeled = [r for r in records if isinstance(r, LabeledRecord)]
    assert {(r.objective, r.chosen) for r in pairs} == {
        ("helpful", "apple , kiwi ."), ("concise", "ok ."), ("helpful", "i like cat , dog and fox too .")}
    # thumbs up/down on s0, and "both bad" = a thumbs-down on each completion of p0
    assert sorted((r.completion, r.label, r.objective) for r in labeled) == [
        ("apple , kiwi .", False, "helpful"), ("i like fig .", False, "concise"),
        ("i like fig .", True, "helpful"), ("ok .", False, "helpful")]


def test_filters(db):
    only = load_records(f"sqlite:///{db}?objective=helpful&kind=pair&round=1").records
    assert [(r.prompt, r.chosen) for r in only] == [(WORDS[0], "apple , kiwi .")]
    bob = load_records(f"sqlite:///{db}?annotator=bob").records
    assert len(bob) == 4 and all(isinstance(r, LabeledRecord) for r in bob)


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(FeedbackDataError, match="no such database file"):
        load_records(f"sqlite:///{tmp_path}/nope.db")


def test_export_writes_canonical_jsonl_and_ties(db, tmp_path, capsys):
    out = tmp_path / "export" / "fb.jsonl"
    assert main(["data", "export", str(db), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ties = [json.loads(line) for line in (tmp_path / "export" / "fb.ties.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and len(ties) == 1
    assert ties[0]["objective"] == "concise" and ties[0]["annotator"] == "alice"
    first = rows[0]
    assert {"annotator", "round", "judge", "time", "submission_id", "comment"} <= set(first)
    assert first["judge"] == "human" and first["comment"] == "good"
    assert len(load_records(out).records) == 7
    assert "1 ties" in capsys.readouterr().out
    assert main(["data", "export", str(db), "--out", str(out), "--objective", "concise", "--kind", "pair"]) == 0
    assert len(out.read_text().splitlines()) == 1


def test_export_bad_input_exit_2(tmp_path, capsys):
    assert main(["data", "export", str(tmp_path / "nope.db"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no such database file" in capsys.readouterr().err


def test_database_source_trains(db, tmp_path):
    from feedalign.envs.text_task import build_tiny_llama, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_tiny_llama(tokenizer, seed=0)
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    config = {
        "model": {"path": str(tmp_path / "base")},
        "data": [{"name": "db_pairs", "loss": "dpo", "path": f"sqlite:///{db}?kind=pair", "max_length": 32,
                  "hparams": {"beta": 0.1}}],
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "micro_batch_size": 2, "lr": 1e-3,
                  "cpu": True, "log_every": 1, "seed": 0},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--quiet"]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in m or any(k.startswith("loss") for k in m) for m in metrics)
    assert (tmp_path / "run" / "final").is_dir()


def test_data_inspect_reads_a_database(db, capsys):
    assert main(["data", "inspect", f"sqlite:///{db}?kind=pair"]) == 0
    out = capsys.readouterr().out
    assert "pair" in out and "3" in out
