"""`feedalign rm score` input errors: one line, exit 2, before any model is loaded."""

from __future__ import annotations

import json

from feedalign.cli.main import main


def _rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    return path


def test_missing_reward_model_dir_is_one_line(tmp_path, capsys):
    argv = ["rm", "score", str(tmp_path / "none"), "--input", str(_rows(tmp_path)), "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and str(tmp_path / "none") in err


def test_unwritable_output_fails_before_loading_the_model(tmp_path, capsys):
    rm_dir = tmp_path / "rm"
    rm_dir.mkdir()  # not a reward model: loading it would fail, but the output is checked first
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    argv = ["rm", "score", str(rm_dir), "--input", str(_rows(tmp_path)), "--output", str(blocker / "out.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written" in err and "is not a directory" in err
    assert main(["rm", "score", str(rm_dir), "--input", str(_rows(tmp_path)), "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_directory_that_is_no_reward_model_is_one_line(tmp_path, capsys):
    rm_dir = tmp_path / "rm"
    rm_dir.mkdir()
    argv = ["rm", "score", str(rm_dir), "--input", str(_rows(tmp_path)), "--output", str(tmp_path / "o.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
