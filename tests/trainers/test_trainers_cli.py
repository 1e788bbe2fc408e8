"""`feedalign train` / `feedalign generate`: exit codes, errors before training, and a real
SIGKILL of a training process followed by --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from timeouts import subprocess_timeout
import yaml
from trainer_fixtures import (
    assert_states_equal,
    base_config,
    final_state,
    labeled_rows,
    pair_rows,
    save_tiny_model,
    write_jsonl,
)

from feedalign.cli.main import main
from feedalign.config import ConfigError
from feedalign.trainers import TrainerCallback, train

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {
        "model": save_tiny_model(root / "model"),
        "pairs": write_jsonl(root / "pairs.jsonl", pair_rows(12, seed=1, objective="helpful")),
        "thumbs": write_jsonl(root / "thumbs.jsonl", labeled_rows(12, seed=2)),
    }


def _write_cfg(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


class _Spy(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, step, metrics):
        self.steps.append(step)


def test_config_and_data_errors_exit_2_before_training(env, tmp_path, capsys):
    data = [{"path": str(env["pairs"]), "loss": "dpo"}]
    cfg = _write_cfg(tmp_path / "cfg.yaml", base_config(env["model"], tmp_path / "out", data))
    assert main(["train", str(cfg), "train.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.lrr" in err and "did you mean 'train.lr'" in err
    assert main(["train", str(cfg), "model.path=/no/such/model"]) == 2
    assert "model.path" in capsys.readouterr().err
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": 3}\n')
    assert main(["train", str(cfg), f"data.0.path={bad_rows}"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
    # Quarantine mode skips the bad row and trains.
    assert (
        main(
            [
                "train",
                str(cfg),
                f"data.0.path={bad_rows}",
                "--on-invalid",
                "quarantine",
                "--quiet",
                "--set",
                "train.max_steps=1",
            ]
        )
        == 0
    )
    assert (tmp_path / "out" / "quarantine" / "dpo.quarantine.jsonl").read_text().count("\n") == 1


def test_train_api_errors_name_the_key_before_any_step(env, tmp_path):
    spy = _Spy()
    data = [{"path": str(env["thumbs"]), "loss": "kto"}]
    with pytest.raises(ConfigError) as info:
        train(base_config(env["model"], tmp_path / "out", data, micro_batch_size=1), callbacks=[spy])
    assert info.value.key == "train.micro_batch_size"
    with pytest.raises(ConfigError) as info:
        train(
            base_config(env["model"], tmp_path / "out", [{"path": str(env["pairs"]), "loss": "modpo"}]),
            callbacks=[spy],
        )
    assert info.value.key == "data.0.margins"
    assert spy.steps == []


def test_modpo_with_callable_margins_and_generate(env, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    data = [
        {
            "path": str(env["pairs"]),
            "loss": "modpo",
            "hparams": {"weight": 0.5, "margin_weights": [0.5]},
            "margins": {"kind": "callable", "target": "trainer_fixtures:length_margins"},
        }
    ]
    cfg = _write_cfg(
        tmp_path / "cfg.yaml", base_config(env["model"], tmp_path / "out", data, max_steps=2, save_every=2)
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    capsys.readouterr()
    for target in (tmp_path / "out", tmp_path / "out" / "step-00000002"):
        assert (
            main(
                [
                    "generate",
                    str(target),
                    "--prompt",
                    "abc",
                    "--prompt",
                    "hg",
                    "--max-new-tokens",
                    "4",
                    "--json",
                    "--temperature",
                    "0",
                ]
            )
            == 0
        )
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [line["prompt"] for line in lines] == ["abc", "hg"]
        assert all(isinstance(line["completion"], str) for line in lines)
    # The final model and the last checkpoint hold the same weights: same greedy output.
    assert (
        main(
            [
                "generate",
                str(tmp_path / "out" / "final"),
                "--prompts-file",
                str(_prompts(tmp_path)),
                "--max-new-tokens",
                "4",
                "--temperature",
                "0",
                "--json",
            ]
        )
        == 0
    )
    assert [json.loads(line)["completion"] for line in capsys.readouterr().out.splitlines()] == [
        ln["completion"] for ln in lines
    ]
    assert main(["generate", str(tmp_path / "nope"), "--prompt", "a"]) == 2


def _prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("abc\nhg\n")
    return path


def _run_cli(args, env_vars, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "feedalign", *args],
        env=env_vars,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(env, tmp_path):
    data = [
        {"path": str(env["pairs"]), "loss": "dpo"},
        {"path": str(env["thumbs"]), "loss": "bco"},
    ]
    steps = 60
    cfg = base_config(
        env["model"],
        tmp_path / "killed",
        data,
        max_steps=steps,
        save_every=5,
        keep_checkpoints=2,
        log_every=5,
    )
    cfg_path = _write_cfg(tmp_path / "cfg.yaml", cfg)
    env_vars = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = _run_cli(["train", str(cfg_path), "--quiet"], env_vars)
    latest = tmp_path / "killed" / "latest"
    deadline = time.time() + subprocess_timeout(120)
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert still_running, "training finished before it could be killed; raise max_steps"
    assert not (tmp_path / "killed" / "final").exists()
    resumed = _run_cli(["train", str(cfg_path), "--resume"], env_vars)
    out, err = resumed.communicate(timeout=subprocess_timeout(300))
    assert resumed.returncode == 0, err
    assert "resumed from" in err and f"step-{steps:08d}" not in err.split("resumed from")[1].splitlines()[0]
    # The uninterrupted run, in this process (also single-threaded).
    train({**cfg, "train": {**cfg["train"], "output_dir": str(tmp_path / "reference")}})
    assert_states_equal(final_state(tmp_path / "killed"), final_state(tmp_path / "reference"))
