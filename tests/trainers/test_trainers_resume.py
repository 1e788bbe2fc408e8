"""--resume verifies what it resumes: data fingerprints, setting changes that take effect
or are refused, no usable checkpoint, and one-line errors when a save fails."""

from __future__ import annotations

import errno
import json
import random

import pytest
from trainer_fixtures import assert_states_equal, base_config, final_state, labeled_rows, pair_rows, save_tiny_model, write_jsonl

from feedalign.config import ConfigError
from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers import train
from feedalign.trainers.logging import read_metrics


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return {
        "root": root,
        "model": save_tiny_model(root / "model"),
        "pairs": pair_rows(12, seed=1),
        "thumbs": labeled_rows(12, seed=2),
    }


def _config(env, tmp_path, **train_cfg):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", env["pairs"])
    thumbs = write_jsonl(tmp_path / "thumbs.jsonl", env["thumbs"])
    data = [{"path": str(pairs), "loss": "dpo"}, {"path": str(thumbs), "loss": "kto"}]
    settings = {"max_steps": 4, "save_every": 2, "keep_checkpoints": 0, **train_cfg}
    return base_config(env["model"], tmp_path / "out", data, **settings)


def _interrupted(env, tmp_path, **train_cfg):
    """A run cut after its step-2 checkpoint (the later checkpoints and final/ removed)."""
    cfg = _config(env, tmp_path, **train_cfg)
    train(cfg)
    out = tmp_path / "out"
    import shutil

    for path in ckpt.list_checkpoints(out)[1:] + [out / "final"]:
        shutil.rmtree(path)
    (out / "latest").write_text("step-00000002\n")
    return cfg


@pytest.mark.parametrize("edit", ["row", "shuffle"])
def test_changed_data_with_the_same_row_count_refuses_naming_the_source(env, tmp_path, edit):
    cfg = _interrupted(env, tmp_path)
    rows = [dict(r) for r in env["pairs"]]
    if edit == "row":
        rows[5]["chosen"] += "x"
    else:
        random.Random(0).shuffle(rows)
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(ConfigError) as info:
        train(cfg, resume=True)
    message = str(info.value)
    assert info.value.key == "train.output_dir"
    assert "'dpo'" in message and "'kto'" not in message and "--allow-changed-data" in message
    # Allowed explicitly: it trains on (warned about).
    result = train(cfg, resume=True, allow_changed_data=True)
    assert result.resumed_from.name == "step-00000002" and result.steps == 4


def test_unchanged_data_in_a_moved_file_resumes_bit_identically(env, tmp_path):
    cfg = _interrupted(env, tmp_path)
    reference = {**cfg, "train": {**cfg["train"], "output_dir": str(tmp_path / "ref")}}
    train(reference)
    moved = write_jsonl(tmp_path / "moved.jsonl", env["pairs"])
    cfg["data"][0]["path"] = str(moved)
    result = train(cfg, resume=True)
    assert result.resumed_from.name == "step-00000002"
    assert_states_equal(final_state(tmp_path / "out"), final_state(tmp_path / "ref"))


def test_changed_lr_takes_effect_and_is_recorded(env, tmp_path):
    cfg = _interrupted(env, tmp_path, scheduler="linear", warmup_steps=1)
    cfg["train"]["lr"] = 5e-4
    cfg["train"]["max_steps"] = 6
    result = train(cfg, resume=True)
    assert result.steps == 6
    lrs = {r["step"]: r["lr"] for r in read_metrics(tmp_path / "out") if "lr" in r}
    # linear decay with 1 warmup step over 6 steps, from the NEW peak: lr(s) = 5e-4 * (6 - s) / 5
    for step in (3, 4, 5):
        assert lrs[step] == pytest.approx(5e-4 * (6 - step) / 5, rel=1e-9)
    saved = ckpt.load_checkpoint(result.checkpoint)
    assert saved.optimizer["param_groups"][0]["initial_lr"] == 5e-4
    assert "lr: 0.0005" in saved.config_yaml
    assert "lr: 0.0005" in (tmp_path / "out" / "final" / "feedalign_config.yaml").read_text()
    history = json.loads((result.checkpoint / "trainer_state.json").read_text())["config_history"]
    assert history == [{"step": 2, "changed": {"train.lr": [1e-3, 5e-4], "train.max_steps": [4, 6]}}]


@pytest.mark.parametrize("override", [("seed", 3), ("micro_batch_size", 2)])
def test_settings_that_cannot_change_refuse_the_resume(env, tmp_path, override):
    cfg = _interrupted(env, tmp_path)
    key, value = override
    cfg["train"][key] = value
    with pytest.raises(ConfigError, match=f"train.{key}") as info:
        train(cfg, resume=True)
    assert "cannot change" in str(info.value)


def test_resume_without_a_usable_checkpoint_refuses_unless_resume_or_start(env, tmp_path):
    cfg = _config(env, tmp_path)
    with pytest.raises(ConfigError, match="--resume-or-start"):
        train(cfg, resume=True)
    cfg = _interrupted(env, tmp_path)
    weights = tmp_path / "out" / "step-00000002" / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:50])  # every checkpoint corrupt
    with pytest.raises(ConfigError, match="none of its 1 checkpoints is usable"):
        train(cfg, resume=True)
    result = train(cfg, resume_or_start=True)
    assert result.resumed_from is None and result.steps == 4


@pytest.mark.parametrize("failure", ["enospc", "permission"])
def test_a_failed_save_is_one_clear_error_and_keeps_the_last_checkpoint(env, tmp_path, monkeypatch, failure):
    cfg = _config(env, tmp_path)
    real_save = ckpt.torch.save

    def save(obj, path, *args, **kwargs):
        if "ckpt-00000004" in str(path):
            if failure == "enospc":
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save)
    with pytest.raises(ckpt.CheckpointWriteError) as info:
        train(cfg)
    message = str(info.value)
    out = tmp_path / "out"
    assert "step-00000004" in message and str(out) in message and "free space there:" in message
    assert ("disk full" in message) == (failure == "enospc")
    assert f"the last good checkpoint {out / 'step-00000002'} is kept" in message
    assert (out / "latest").read_text().strip() == "step-00000002"
    assert ckpt.verify_checkpoint(out / "step-00000002") is None
    assert not list(out.glob("*.tmp"))


def test_an_unreadable_latest_pointer_falls_back_to_the_checkpoints(tmp_path):
    from test_trainers_checkpoint import _payload

    ckpt.save_checkpoint(tmp_path, _payload(1), keep=0)
    (tmp_path / "latest").write_bytes(b"\xff\xfe\x00step")
    assert ckpt.find_resume_checkpoint(tmp_path).name == "step-00000001"
