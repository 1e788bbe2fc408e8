"""The training loop on tiny random models (CPU): accumulation, resume, mixed feedback,
determinism, non-finite losses."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from trainer_fixtures import (
    assert_states_equal,
    base_config,
    labeled_rows,
    model_state,
    pair_rows,
    same_prompt_thumbs,
    save_tiny_model,
    write_jsonl,
)

from feedalign.cli.main import main
from feedalign.losses import register_loss, unregister_loss
from feedalign.losses._hparams import positive
from feedalign.trainers import NonFiniteLossError, TrainerCallback, train
from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers.logging import read_metrics


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    data = {
        "model": save_tiny_model(root / "model"),
        "pairs": write_jsonl(root / "pairs.jsonl", pair_rows(16, seed=1, objective="helpful")),
        "thumbs": write_jsonl(root / "thumbs.jsonl", labeled_rows(16, seed=2)),
        "negatives": write_jsonl(
            root / "negatives.jsonl", labeled_rows(12, seed=3, labels="down", prefix="n")
        ),
        "positives": write_jsonl(root / "positives.jsonl", labeled_rows(12, seed=4, labels="up", prefix="u")),
        "same_prompt": write_jsonl(root / "same_prompt.jsonl", same_prompt_thumbs(6, seed=5)),
    }
    return root, data


def _params_after(result) -> dict[str, torch.Tensor]:
    return model_state(result.model)


def test_grad_accumulation_1x8_equals_8x1(env, tmp_path):
    root, d = env
    data = [
        {"path": str(d["pairs"]), "loss": "dpo"},
        {"path": str(d["negatives"]), "loss": "pmpo", "hparams": {"alpha": 0.0, "beta": 1.0}, "weight": 0.5},
        {"path": str(d["positives"]), "loss": "sft", "weight": 0.1},
    ]
    one_by_eight = train(
        base_config(d["model"], tmp_path / "a", data, micro_batch_size=8, grad_accum=1, max_steps=1)
    )
    eight_by_one = train(
        base_config(d["model"], tmp_path / "b", data, micro_batch_size=1, grad_accum=8, max_steps=1)
    )
    a, b = _params_after(one_by_eight), _params_after(eight_by_one)
    assert_states_equal(a, b, atol=1e-6)
    # The step did move the parameters (the equality is not vacuous).
    moved = max(float((a[k] - v).abs().max()) for k, v in _initial_state(d["model"]).items())
    assert moved > 1e-4
    assert math.isclose(one_by_eight.metrics["loss"], eight_by_one.metrics["loss"], rel_tol=1e-5)
    # Adam's first step is nearly scale-free, so also check the gradient itself (its norm
    # is logged before clipping): a missing 1/grad_accum would make it 8x larger.
    assert math.isclose(one_by_eight.metrics["grad_norm"], eight_by_one.metrics["grad_norm"], rel_tol=1e-5)


def _initial_state(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


class _CrashAfterSave(TrainerCallback):
    """Simulates a crash right after the checkpoint of ``at_step`` was written."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_save(self, step, path):
        if step == self.at_step:
            raise KeyboardInterrupt(f"simulated crash after saving {path}")


def _resume_data(d):
    return [
        {"path": str(d["pairs"]), "loss": "dpo"},
        {"path": str(d["thumbs"]), "loss": "bco", "name": "bco"},
        {"path": str(d["thumbs"]), "loss": "kto", "name": "kto"},
    ]


@pytest.fixture(scope="module")
def uninterrupted(env, tmp_path_factory):
    root, d = env
    out = tmp_path_factory.mktemp("uninterrupted")
    cfg = base_config(
        d["model"],
        out,
        _resume_data(d),
        max_steps=6,
        save_every=3,
        grad_accum=2,
        scheduler="cosine",
        warmup_steps=2,
    )
    return cfg, train(cfg)


def test_resume_equals_uninterrupted(env, uninterrupted, tmp_path):
    root, d = env
    cfg, full = uninterrupted
    cfg = {**cfg, "train": {**cfg["train"], "output_dir": str(tmp_path / "run")}}
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_CrashAfterSave(3)])
    assert not (tmp_path / "run" / "final").exists()
    resumed = train(cfg, resume=True)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "step-00000003"
    assert resumed.steps == 6
    assert_states_equal(_params_after(full), _params_after(resumed))
    # Loss state (BCO's running delta), optimizer state and samplers match too.
    a = ckpt.load_checkpoint(full.checkpoint)
    b = ckpt.load_checkpoint(resumed.checkpoint)
    assert a.state["providers"] == b.state["providers"]
    shift = a.state["providers"]["bco"]["delta"]
    # per class, the number of micro-batches (steps * accum) it appeared in: each has >= 1 class
    assert shift["rule"] == "midpoint" and sum(shift["counts"]) >= 6 * 2 and max(shift["counts"]) <= 6 * 2
    assert a.state["samplers"] == b.state["samplers"]
    for key, sa in a.optimizer["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[name], b.optimizer["state"][key][name])
    # The metrics file has each step once, resumed steps included.
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_same_seed_and_config_is_bitwise_deterministic(env, uninterrupted, tmp_path):
    cfg, full = uninterrupted
    again = train({**cfg, "train": {**cfg["train"], "output_dir": str(tmp_path / "again")}})
    assert_states_equal(_params_after(full), _params_after(again))
    # ... and a different seed gives a different run (different batches).
    other = train({**cfg, "train": {**cfg["train"], "output_dir": str(tmp_path / "other"), "seed": 1}})
    a, b = _params_after(full), _params_after(other)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_skips_incomplete_and_corrupt_checkpoints(env, uninterrupted, tmp_path):
    cfg, full = uninterrupted
    out = tmp_path / "run"
    cfg = {**cfg, "train": {**cfg["train"], "output_dir": str(out), "keep_checkpoints": 0}}
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_CrashAfterSave(6)])
    # A kill while writing step 6: its directory is still a *.tmp with partial files...
    partial = out / "ckpt-00000006.tmp"
    shutil.copytree(out / "step-00000006", partial)
    (partial / "manifest.json").unlink()
    # ... and, worse, a step-* directory whose weights were cut short is named by `latest`.
    shutil.rmtree(out / "step-00000006")
    shutil.copytree(out / "step-00000003", out / "step-00000005")
    weights = out / "step-00000005" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (out / "latest").write_text("step-00000005\n")
    assert ckpt.find_resume_checkpoint(out).name == "step-00000003"
    resumed = train(cfg, resume=True)
    assert resumed.resumed_from.name == "step-00000003"
    assert not partial.exists()
    assert_states_equal(_params_after(full), _params_after(resumed))


def test_mixed_feedback_run_trains_every_loss(env, tmp_path):
    root, d = env
    data = [
        {"path": str(d["pairs"]), "loss": "dpo", "hparams": {"beta": 0.5}},
        {"path": str(d["thumbs"]), "loss": "kto"},
        {"path": str(d["negatives"]), "loss": "pmpo", "hparams": {"alpha": 0.0, "beta": 1.0}},
        {"path": str(d["positives"]), "loss": "sft", "weight": 0.2},
    ]
    cfg = base_config(
        d["model"], tmp_path / "out", data, max_steps=8, lr=3e-3, eval_fraction=0.25, eval_every=4
    )
    result = train(cfg)
    records = read_metrics(tmp_path / "out")
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == list(range(1, 9))
    for source in ("dpo", "kto", "pmpo", "sft"):
        values = [r[f"loss/{source}"] for r in train_records]
        assert all(math.isfinite(v) for v in values)
        assert abs(values[-1] - values[0]) > 1e-4, source
    # Total loss is the weighted sum of the per-source means.
    last = train_records[-1]
    weighted = last["loss/dpo"] + last["loss/kto"] + last["loss/pmpo"] + 0.2 * last["loss/sft"]
    assert math.isclose(last["loss"], weighted, rel_tol=1e-5)
    assert "rewards/margins/helpful" in last and "rewards/accuracy/helpful" in last
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [4, 8]
    assert 0.0 <= result.eval_metrics["eval/rewards/accuracy/helpful"] <= 1.0
    # Every source pushes "ab..." completions up and "hg..." ones down: held-out positives
    # become more likely and held-out pairs better ranked.
    assert evals[-1]["eval/loss/sft"] < evals[0]["eval/loss/sft"]
    assert evals[-1]["eval/loss/dpo"] < evals[0]["eval/loss/dpo"]
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()


def test_discordant_pairing_and_lora_adapter_reference(env, tmp_path):
    root, d = env
    data = [{"path": str(d["same_prompt"]), "loss": "dpo", "pairing": "discordant"}]
    cfg = base_config(d["model"], tmp_path / "out", data, max_steps=2, save_every=2)
    cfg["model"]["lora"] = {"r": 4, "alpha": 8}
    cfg["reference"] = {"strategy": "adapter"}
    result = train(cfg)
    assert result.metrics["loss/dpo"] > 0
    saved = ckpt.load_checkpoint(result.checkpoint).weights
    assert saved and all("lora_" in name for name in saved)  # adapter only
    assert (tmp_path / "out" / "final" / "adapter_config.json").is_file()


def _nan_on_third_call():
    calls = {"n": 0}

    def nan_after_two(policy_logps, *, scale: float = 1.0):
        """Test-only loss: -logp, NaN from the third call on."""
        calls["n"] += 1
        losses = -scale * policy_logps
        if calls["n"] >= 3:
            losses = losses * float("nan")
        return losses, {}

    return nan_after_two, calls


def test_nonfinite_loss_stops_with_step_and_ids(env, tmp_path, capsys):
    root, d = env
    fn, calls = _nan_on_third_call()
    register_loss("_test_nan_after_two", feedback="sequence", needs_reference=False,
                  validators={"scale": positive})(fn)
    try:
        _run_nonfinite(env, tmp_path, capsys)
    finally:
        unregister_loss("_test_nan_after_two")


def _run_nonfinite(env, tmp_path, capsys):
    root, d = env
    data = [{"path": str(d["positives"]), "loss": "_test_nan_after_two"}]
    cfg = base_config(d["model"], tmp_path / "out", data, max_steps=5)
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg)
    assert info.value.step == 3
    assert "step 3" in str(info.value)
    saved = json.loads((tmp_path / "out" / "nonfinite_batch.json").read_text())
    ids = saved["sources"]["_test_nan_after_two"]["record_ids"]
    assert saved["step"] == 3 and len(ids) == 4
    assert set(ids) <= {f"u{i}" for i in range(12)}
    assert ids == info.value.record_ids["_test_nan_after_two"]
    assert not (tmp_path / "out" / "final").exists()
    # The command line reports it with a non-zero exit code.
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        yaml.safe_dump({**cfg, "train": {**cfg["train"], "output_dir": str(tmp_path / "cli")}})
    )
    assert main(["train", str(cfg_path), "--quiet"]) == 3
    assert "non-finite loss at step 1" in capsys.readouterr().err


def test_python_api_with_objects_and_in_memory_records(tmp_path):
    from feedalign.data.records import PairRecord
    from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm

    tokenizer = build_char_tokenizer("abcdefgh ")
    model = build_tiny_causal_lm(len(tokenizer), hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64)
    before = model_state(model)
    pairs = [PairRecord(f"p{i}", "ab" * (i % 3 + 1), "hg", objective="helpful") for i in range(6)]
    rows = [
        {"prompt": f"q{i}", "completion": "ab" if i % 2 else "hg", "label": bool(i % 2)} for i in range(6)
    ]
    config = {
        "model": {},
        "data": [{"loss": "dpo", "name": "prefs"}, {"loss": "bco", "name": "thumbs"}],
        "train": {"output_dir": str(tmp_path / "out"), "max_steps": 3, "micro_batch_size": 2, "lr": 1e-2},
    }
    result = train(config, model=model, tokenizer=tokenizer, records={"prefs": pairs, "thumbs": rows})
    assert result.steps == 3 and result.model is model
    after = model_state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained in place
    assert result.metrics["thumbs/delta"] != 0.0  # BCO's shift moved off its initial 0
    assert (tmp_path / "out" / "final" / "tokenizer.json").is_file()


def test_reference_strategies_agree(env, tmp_path):
    root, d = env
    data = [{"path": str(d["pairs"]), "loss": "dpo"}, {"path": str(d["thumbs"]), "loss": "kto"}]

    def run(name, **extra):
        cfg = base_config(d["model"], tmp_path / name, data, max_steps=3)
        for key, value in extra.items():
            cfg.setdefault(key, {}).update(value)
        return _params_after(train(cfg))

    copy = run("copy", reference={"strategy": "copy"})
    cache = tmp_path / "ref_cache"
    cached = run("cached", reference={"strategy": "cached", "cache_dir": str(cache)})
    assert list(cache.rglob("shard-*.pt"))  # written at the end of the run
    cached_again = run("cached_again", reference={"strategy": "cached", "cache_dir": str(cache)})
    assert_states_equal(copy, cached)
    assert_states_equal(copy, cached_again)
    lora = {"lora": {"r": 4, "alpha": 8}}
    lora_copy = run("lora_copy", model=lora, reference={"strategy": "copy"})
    lora_adapter = run("lora_adapter", model=lora, reference={"strategy": "adapter"})
    assert_states_equal(lora_copy, lora_adapter, atol=1e-6)


def test_config_changes_lists_changed_keys():
    from feedalign.trainers.run import config_changes

    saved = "train: {lr: 0.1, seed: 0}\ndata: [{loss: dpo, weight: 1.0}]\n"
    current = "train: {lr: 0.2, seed: 0}\ndata: [{loss: dpo, weight: 2.0}]\n"
    assert config_changes(saved, current) == ["data.0.weight", "train.lr"]
    assert config_changes(saved, saved) == []


def test_resume_with_other_data_fails_clearly(env, uninterrupted, tmp_path):
    from feedalign.config import ConfigError

    root, d = env
    cfg, full = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(full.output_dir, out)
    bigger = write_jsonl(tmp_path / "more_pairs.jsonl", pair_rows(20, seed=9))
    cfg = {**cfg, "train": {**cfg["train"], "output_dir": str(out)}}
    cfg["data"] = [{**cfg["data"][0], "path": str(bigger)}, *cfg["data"][1:]]
    with pytest.raises(ConfigError, match="same data") as info:
        train(cfg, resume=True)
    assert info.value.key == "train.output_dir" and "data.0.path" in str(info.value)
