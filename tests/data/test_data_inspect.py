"""`feedalign data inspect`: counts per kind and objective, problems collected, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedalign.cli.main import main
from feedalign.data.inspect import describe_set, inspect_sources, objective_table

BAD = Path(__file__).parent / "bad"

ROWS = [
    {"prompt": "p", "chosen": "a", "rejected": "b", "objective": "helpful"},
    {"prompt": "p", "chosen": "a", "rejected": "c", "objective": "helpful"},
    {"prompt": "p", "completion": "a", "label": "up", "objective": "helpful"},
    {"prompt": "p", "completion": "b", "label": "down", "objective": "helpful"},
    {"prompt": "p", "completion": "c", "label": "down", "objective": "helpful"},
    {"prompt": "q", "completion": "x", "label": True, "objective": "harmless"},
    {"prompt": "q", "completion": "y", "label": True, "objective": "harmless"},
    {"prompt": "r", "completion": "z", "label": False},
    {"prompt": "s", "completion": "w", "scores": {"helpful": 0.5, "harmless": 1.0}},
]


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_inspect_counts_kinds_per_objective(tmp_path, capsys):
    path = _write(tmp_path / "good.jsonl", ROWS)
    assert main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    # objective: pairs up down scored discordant feedback...
    assert lines["helpful"][1:6] == ["2", "1", "2", "1", "1"]
    assert "pairs + labeled (up+down) + scored" in out
    assert lines["harmless"][1:6] == ["0", "2", "0", "1", "0"] and "positive-only + scored" in out
    assert lines["(none)"][1:6] == ["0", "0", "1", "0", "0"] and "negative-only" in out
    assert "rows: 9 read, 9 accepted, 0 rejected" in out and "problems: none" in out


def test_inspect_collects_all_problems_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(BAD)
    files = ["bad_label.jsonl", "wrong_type.jsonl", "empty.jsonl", "missing.jsonl", "unknown_objective.jsonl"]
    assert main(["data", "inspect", *files, "--objectives", "helpful,harmless"]) == 1
    out = capsys.readouterr().out
    assert "problems: 5" in out
    for expected in (
        "bad_label.jsonl:2: field 'label'",
        "wrong_type.jsonl:2: field 'chosen': expected a non-empty string, got int",
        "empty.jsonl: empty",
        "missing.jsonl: no such file",
        "unknown_objective.jsonl:2: field 'objective': unknown objective 'helpfull'",
    ):
        assert expected in out
    assert "rows: 7 read, 3 accepted, 4 rejected" in out


def test_inspect_max_problems_limits_the_listing(tmp_path, capsys):
    bad = [{"prompt": "p", "completion": "c", "label": f"x{i}"} for i in range(6)]
    path = _write(tmp_path / "many.jsonl", bad)
    assert main(["data", "inspect", str(path), "--max-problems", "2"]) == 1
    out = capsys.readouterr().out
    assert "problems: 6 (showing the first 2)" in out
    assert f"{path}:2: field 'label'" in out and f"{path}:3:" not in out


def test_inspect_quarantine_writes_files_and_reports_conflicts(tmp_path, capsys):
    rows = ROWS + [{"prompt": "p", "completion": "a", "label": "down", "objective": "helpful"}, {"prompt": 3}]
    path = _write(tmp_path / "d.jsonl", rows)
    qdir = tmp_path / "q"
    assert (
        main(["data", "inspect", str(path), "--on-invalid", "quarantine", "--quarantine-dir", str(qdir)]) == 1
    )
    out = capsys.readouterr().out
    assert "conflicts (kept, not counted as problems): 1" in out
    assert f"same completion labeled up at {path}:3 and down at {path}:10" in out
    written = (qdir / "d.jsonl.quarantine.jsonl").read_text().splitlines()
    assert len(written) == 1 and json.loads(written[0])["source"] == f"{path}:11"
    assert "problems: 1" in out


def test_inspect_hf_directory_and_bad_options(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2])}).save_to_disk(str(tmp_path / "hf"))
    assert main(["data", "inspect", str(tmp_path / "hf")]) == 0
    assert "rows: 2 read, 2 accepted" in capsys.readouterr().out
    assert main(["data", "inspect", str(tmp_path / "hf"), "--objectives", ","]) == 2
    assert main(["data"]) == 2


def test_report_helpers():
    report = inspect_sources([ROWS])
    table = objective_table(report.result)
    assert table["helpful"] == {"pairs": 2, "up": 1, "down": 2, "scored": 1}
    assert report.discordant == {"helpful": 1}
    assert describe_set({"pairs": 0, "up": 0, "down": 3, "scored": 0}) == "negative-only"
    assert report.ok and report.exact_duplicates == 0
    assert inspect_sources([ROWS + ROWS[:2]]).exact_duplicates == 2
