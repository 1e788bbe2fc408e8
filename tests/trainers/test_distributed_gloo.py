"""Two CPU processes (gloo) train exactly like one process with the same global batch.

The two-process run goes through the documented command,

    accelerate launch --config_file examples/accelerate/ddp.yaml --num_processes 2 \
        -m feedalign train CONFIG train.cpu=true train.micro_batch_size=4

and the one-process run through ``feedalign train`` with ``train.micro_batch_size=8``. Each
optimizer step both see the same 8 pairs (every process takes its rank's slice of the same
global batch) and the averaged gradient of two 4-pair means equals the gradient of the
8-pair mean, so the logged loss curve, the gradient norms and the final parameters must agree
up to fp32 summation order: stated tolerance 1e-5 relative (observed ~3e-7 of the parameter
scale).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from timeouts import subprocess_timeout
import torch
import yaml
from trainer_fixtures import final_state, pair_rows, save_tiny_model, write_jsonl

REPO = Path(__file__).resolve().parents[2]
DDP_CONFIG = REPO / "examples" / "accelerate" / "ddp.yaml"
STEPS = 3
RTOL = 1e-5

pytestmark = pytest.mark.slow  # two interpreter launches: ~30-50 s on 2 busy cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path) -> Path:
    model_dir = save_tiny_model(tmp_path / "model")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(24, seed=1))
    config = {
        "model": {"path": str(model_dir), "dtype": "float32"},
        "reference": {"strategy": "copy"},
        "data": [{"loss": "dpo", "path": str(data)}],
        "train": {
            "output_dir": str(tmp_path / "unused"),
            "seed": 0,
            "lr": 1e-3,
            "max_steps": STEPS,
            "log_every": 1,
            "cpu": True,
            "precision": "fp32",
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _metrics(output_dir: Path) -> list[dict]:
    lines = (output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("gloo")
    config = _config(tmp)
    one, two = tmp / "one", tmp / "two"
    from feedalign.cli.main import main

    assert main(["train", str(config), f"train.output_dir={one}", "train.micro_batch_size=8", "--quiet"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(DDP_CONFIG), "--num_processes", "2", "--main_process_port", str(_free_port()),
        "-m", "feedalign", "train", str(config),
        f"train.output_dir={two}", "train.micro_batch_size=4", "--quiet",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=subprocess_timeout(240))
    assert done.returncode == 0, done.stderr[-4000:]
    return {"one": one, "two": two, "initial": tmp / "model"}


def test_two_processes_really_ran(runs: dict[str, Path]) -> None:
    # epoch = step / steps-per-epoch, and steps per epoch counts the processes: 24 pairs at
    # a global batch of 8 is 3 steps per epoch in both runs (a silent single-process
    # fallback with micro-batch 4 would log 6 steps per epoch).
    for name in ("one", "two"):
        epochs = [m["epoch"] for m in _metrics(runs[name])]
        assert epochs == pytest.approx([s / 3 for s in range(1, STEPS + 1)])


def test_gradient_norms_match(runs: dict[str, Path]) -> None:
    one, two = _metrics(runs["one"]), _metrics(runs["two"])
    assert [m["step"] for m in one] == [m["step"] for m in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=RTOL)


def test_final_parameters_match(runs: dict[str, Path]) -> None:
    one, two = final_state(runs["one"]), final_state(runs["two"])
    from safetensors.torch import load_file

    initial = load_file(str(runs["initial"] / "model.safetensors"))
    assert one.keys() == two.keys()
    moved = max(float((one[k] - initial[k]).abs().max()) for k in one)
    assert moved > 1e-3, "training did not move the parameters; the comparison would be vacuous"
    for name in one:
        scale = float(one[name].abs().max())
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=RTOL * scale, msg=name)


def test_logged_loss_curve_matches(runs: dict[str, Path]) -> None:
    # The logged loss is averaged over the processes: with equal micro-batches the mean of
    # the two 4-pair means is the 8-pair mean the single process logs.
    one, two = _metrics(runs["one"]), _metrics(runs["two"])
    assert len({round(m["loss"], 6) for m in one}) == STEPS  # the curve moves
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=RTOL)
