"""`feedalign rm train --resume` (real subprocesses): a run continued from its checkpoint
gives the weights of an uninterrupted run; other data or settings are refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file
from test_reward_model import OBJECTIVES, simulate, write_jsonl
from timeouts import subprocess_timeout
from trainer_fixtures import assert_states_equal

from feedalign.envs.text_task import TextTask
from feedalign.policies.reward_model import HEADS_FILE
from feedalign.trainers.reward_model import load_rm_config, train_reward_model
from feedalign.trainers.rm_resume import CHECKPOINT_DIR


def _rm(args, quiet=True, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "feedalign", "rm", "train", *args] + (["--quiet"] if quiet else []),
                          env=env,
                          capture_output=True, text=True, timeout=subprocess_timeout(180), **kw)


def _weights(directory):
    from safetensors.torch import load_file as load

    backbone = directory / "backbone" / "model.safetensors"
    return {**load_file(str(directory / HEADS_FILE)), **{f"backbone.{k}": v for k, v in load(str(backbone)).items()}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm_resume")
    pairs, thumbs = simulate(TextTask(), 60, seed=0)
    write_jsonl(root / "pairs.jsonl", pairs)
    write_jsonl(root / "thumbs.jsonl", thumbs)

    def config(out, steps):
        cfg = {
            "model": {"builder": "text_task", "seed": 0},
            "objectives": list(OBJECTIVES),
            "data": [{"path": str(root / "pairs.jsonl"), "name": "pairs"},
                     {"path": str(root / "thumbs.jsonl"), "name": "thumbs"}],
            "train": {"output_dir": str(out), "lr": 3e-3, "steps": steps, "batch_size": 8, "max_length": 64,
                      "device": "cpu", "save_every": 3, "keep_checkpoints": 0},
        }
        path = root / f"{out.name}_{steps}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    reference = root / "reference"
    train_reward_model(load_rm_config(config(reference, 6)))
    return root, config, reference


def test_rm_resume_matches_an_uninterrupted_run(setup):
    root, config, reference = setup
    out = root / "cut"
    first = _rm([str(config(out, 3))])  # stops after its step-3 checkpoint
    assert first.returncode == 0, first.stderr
    assert (out / CHECKPOINT_DIR / "step-00000003").is_dir()
    again = _rm([str(config(out, 6))])
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = _rm([str(config(out, 6)), "--resume"], quiet=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert_states_equal(_weights(out), _weights(reference))
    assert load_file(str(out / CHECKPOINT_DIR / "step-00000006" / "weights.safetensors")).keys()


def test_rm_sigterm_saves_and_resumes_to_the_weights_of_an_uninterrupted_run(setup):
    import signal

    root, config, _ = setup
    out = root / "signalled"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    long_run = yaml.safe_load(config(out, 1_000_000).read_text())
    long_run["train"]["log_every"] = 1
    path = root / "long.yaml"
    path.write_text(yaml.safe_dump(long_run))
    proc = subprocess.Popen([sys.executable, "-m", "feedalign", "rm", "train", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("rm step 2/"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=subprocess_timeout(180))
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert "interrupted by SIGTERM after step" in last and "--resume" in last
    stopped = int(last.split("after step ")[1].split(";")[0])
    assert (out / CHECKPOINT_DIR / f"step-{stopped:08d}").is_dir()
    # The learning rate is constant: a run of stopped + 2 steps is the uninterrupted one.
    total = stopped + 2
    resumed = _rm([str(path), f"train.steps={total}", "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    reference = root / "signalled_reference"
    train_reward_model(load_rm_config(config(reference, total)))
    assert_states_equal(_weights(out), _weights(reference))


def test_rm_resume_refuses_other_data_and_no_checkpoint(setup):
    # In-process (the subprocess path is the test above): the refusals are ConfigErrors.
    from feedalign.config import ConfigError

    root, config, _ = setup
    out = root / "changed"
    train_reward_model(load_rm_config(config(out, 3)))
    lines = (root / "pairs.jsonl").read_text().splitlines()
    edited = root / "edited_pairs.jsonl"
    edited.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same rows, other order
    moved = load_rm_config(config(out, 6), [f"data.0.path={edited}"])
    with pytest.raises(ConfigError, match="'pairs/pair'.*--allow-changed-data"):
        train_reward_model(moved, resume=True)
    with pytest.raises(ConfigError, match=r"train.lr \(0.003 -> 0.01\)"):
        train_reward_model(load_rm_config(config(out, 6), ["train.lr=0.01"]), resume=True)
    assert train_reward_model(moved, resume=True, allow_changed_data=True).metrics["steps"] == 6
    empty = load_rm_config(config(root / "empty", 3))
    with pytest.raises(ConfigError, match="--resume-or-start"):
        train_reward_model(empty, resume=True)
    assert train_reward_model(empty, resume_or_start=True).metrics["steps"] == 3


def test_rm_config_takes_the_trainer_vocabulary_and_warns_on_old_spellings(tmp_path):
    from feedalign.config import ConfigError

    path = tmp_path / "rm.yaml"
    base = {"model": {"builder": "text_task"}, "data": [{"path": "x.jsonl"}]}
    path.write_text(yaml.safe_dump({**base, "train": {"output_dir": "o", "max_steps": 7, "micro_batch_size": 3}}))
    config = load_rm_config(path)
    assert (config.train.steps, config.train.batch_size) == (7, 3)
    assert load_rm_config(path, ["train.max_steps=9"]).train.steps == 9
    path.write_text(yaml.safe_dump({**base, "train": {"output_dir": "o", "steps": 7}}))
    with pytest.warns(FutureWarning, match="train.steps is deprecated .* use train.max_steps"):
        assert load_rm_config(path).train.steps == 7
    path.write_text(yaml.safe_dump({**base, "train": {"output_dir": "o", "steps": 7, "max_steps": 8}}))
    with pytest.raises(ConfigError, match="both 'max_steps' and its old spelling 'steps'"):
        load_rm_config(path)
