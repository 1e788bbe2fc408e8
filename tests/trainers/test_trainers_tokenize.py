"""Trainer side of tokenisation: truncation counts in metrics.jsonl, rows that cannot fit
quarantined (or failing the run), threads, and missing model paths failing at once."""

import json
import time

import pytest
import torch

from feedalign.cli.main import main
from feedalign.data.errors import FeedbackDataError
from feedalign.trainers.logging import read_metrics
from trainer_fixtures import base_config, pair_rows, save_tiny_model, write_jsonl


def _rows():
    rows = pair_rows(6, seed=1)
    rows[0]["prompt"] = "abcdefgh" * 4  # 32 prompt tokens: cannot fit next to min_prompt_length=30
    rows[1]["prompt"] = "abcdefgh" * 2  # 16 tokens: cut from the left to fit
    return rows


def test_truncated_and_rejected_rows_are_counted_and_quarantined(tmp_path):
    from feedalign.trainers.loop import train

    model = save_tiny_model(tmp_path / "model")
    data = [{"path": str(write_jsonl(tmp_path / "pairs.jsonl", _rows())), "loss": "dpo", "max_length": 16,
             "min_prompt_length": 4}]
    cfg = base_config(model, tmp_path / "out", data, max_steps=1, on_invalid="quarantine", threads=1)
    result = train(cfg)
    first = read_metrics(tmp_path / "out")[0]
    assert first["step"] == 1 and first["data/dpo/truncated"] >= 1 and first["data/dpo/rejected"] == 0
    assert all("data/dpo/truncated" not in r for r in read_metrics(tmp_path / "out")[1:])
    assert torch.get_num_threads() == 1
    # A minimum prompt that leaves no room: the long row is rejected with its reason.
    cfg = base_config(model, tmp_path / "out2", [dict(data[0], min_prompt_length=16)], max_steps=1,
                      on_invalid="quarantine")
    train(cfg)
    lines = (tmp_path / "out2" / "quarantine" / "dpo.tokenize.quarantine.jsonl").read_text().splitlines()
    rejected = [json.loads(line) for line in lines]
    assert [r["id"] for r in rejected] == ["p0", "p1"]  # 32 and 16 prompt tokens + BOS
    assert all("does not fit in max_length=16" in r["reason"] for r in rejected)
    assert read_metrics(tmp_path / "out2")[0]["data/dpo/rejected"] == 2
    with pytest.raises(FeedbackDataError, match="pairs.jsonl:1.*does not fit"):
        train(base_config(model, tmp_path / "out3", [dict(data[0], min_prompt_length=16)], max_steps=1))
    assert result.steps == 1


def test_missing_model_paths_fail_at_once_with_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    start = time.perf_counter()
    for path in ("./nope", "runs/typo", "nomodel", str(tmp_path / "x.gguf")):
        assert main(["generate", path, "--prompt", "hi"]) == 2
    cfg = {"model": {"path": "runs/typo"}, "data": [{"path": "d.jsonl", "loss": "dpo"}],
           "train": {"output_dir": "out"}}
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    assert main(["train", "c.yaml"]) == 2
    assert time.perf_counter() - start < 10  # no hub retries (generous for a loaded machine)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error:") for line in err)
    assert "runs/typo" in err[-1] and "does not exist" in err[-1]
