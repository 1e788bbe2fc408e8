"""``train.share_prompt`` (on by default with ``train.packing``): pair sources run each pair's
prompt once and train exactly like unshared packing and padded batches (same losses and
parameters up to fp32 summation order) for DPO-family losses and MODPO, full fine-tuning and
LoRA, every reference strategy and evaluation; ``share_prompt: false`` turns it off."""

from __future__ import annotations

import pytest
from test_trainers_packing import _assert_same_training, _run, _state
from trainer_fixtures import labeled_rows, pair_rows, save_tiny_model, write_jsonl

ATOL = 2e-5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared_prompt")
    return {
        "model": save_tiny_model(root / "model"),
        "pairs": write_jsonl(root / "pairs.jsonl", pair_rows(24, seed=1)),
        "thumbs": write_jsonl(root / "thumbs.jsonl", labeled_rows(24, seed=2)),
    }


def _pair_sources(env):
    return [
        {"path": str(env["pairs"]), "loss": "dpo", "name": "dpo"},
        {"path": str(env["pairs"]), "loss": "ipo", "name": "ipo", "weight": 0.5},
        {"path": str(env["pairs"]), "loss": "cdpo", "name": "cdpo", "weight": 0.5},
        {"path": str(env["pairs"]), "loss": "modpo", "name": "modpo", "weight": 0.5,
         "hparams": {"weight": 0.5, "margin_weights": [0.5]},
         "margins": {"kind": "callable", "target": "trainer_fixtures:length_margins"}},
        {"path": str(env["thumbs"]), "loss": "kto", "name": "thumbs"},  # unpaired: never shared
    ]


def _count_shared_calls(monkeypatch):
    from feedalign.policies import shared_logps

    calls = []
    real = shared_logps.shared_pair_logps

    def spy(model, batch, **kwargs):
        calls.append(int(batch["shared_spans"].shape[0]))
        return real(model, batch, **kwargs)

    monkeypatch.setattr(shared_logps, "shared_pair_logps", spy)
    return calls


def test_shared_prompt_trains_like_padded_and_unshared_packing(env, tmp_path, monkeypatch):
    sources = _pair_sources(env)
    padded = _run(env, tmp_path / "padded", sources, False)
    unshared = _run(env, tmp_path / "unshared", sources, True, share_prompt=False)
    calls = _count_shared_calls(monkeypatch)
    shared = _run(env, tmp_path / "shared", sources, True)
    # shared rows ran for the pair sources (4 pairs per micro-batch), training and evaluation
    assert calls and max(calls) == 4
    _assert_same_training(_state(padded), _state(shared), tmp_path / "padded", tmp_path / "shared")
    _assert_same_training(_state(unshared), _state(shared), tmp_path / "unshared", tmp_path / "shared")
    assert {"eval/loss/dpo", "eval/loss/modpo"} <= shared.eval_metrics.keys()


def test_switch_turns_sharing_off(env, tmp_path, monkeypatch):
    calls = _count_shared_calls(monkeypatch)
    _run(env, tmp_path / "off", _pair_sources(env)[:1], True, share_prompt=False)
    assert calls == []
    _run(env, tmp_path / "padded", _pair_sources(env)[:1], False)
    assert calls == []  # no packing: nothing is shared either


@pytest.mark.parametrize("strategy", ["adapter", "cached", "copy"])
def test_lora_and_references_with_shared_prompt(env, tmp_path, monkeypatch, strategy):
    sources = _pair_sources(env)[:1] + _pair_sources(env)[3:4]
    runs = {}
    for share in (False, True):
        out = tmp_path / f"{strategy}-{share}"
        reference = {"strategy": strategy}
        if strategy == "cached":
            reference["cache_dir"] = str(out / "cache")
        lora = {"lora": {"r": 4, "alpha": 8}} if strategy != "copy" else {}
        runs[share] = _run(env, out, sources, True, share_prompt=share, model=lora, reference=reference, lr=1e-2)
    _assert_same_training(_state(runs[False]), _state(runs[True]), tmp_path / f"{strategy}-False",
                          tmp_path / f"{strategy}-True")


def test_share_prompt_option_validates(env, tmp_path):
    from feedalign.config import ConfigError

    with pytest.raises(ConfigError, match="share_prompt"):
        _run(env, tmp_path / "bad", _pair_sources(env)[:1], True, share_prompt="yes")


def test_cached_reference_entries_are_shared_between_layouts(env, tmp_path):
    """The cache key is each row's own tokens: a cache filled by a shared run serves an
    unshared run (and the reverse) without a miss."""
    cache = tmp_path / "cache"
    sources = _pair_sources(env)[:1]
    _run(env, tmp_path / "a", sources, True, reference={"strategy": "cached", "cache_dir": str(cache)})
    before = sorted(p.name for p in cache.rglob("*") if p.is_file())
    _run(env, tmp_path / "b", sources, True, share_prompt=False,
         reference={"strategy": "cached", "cache_dir": str(cache)})
    after = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert before and after == before  # nothing new had to be computed


def test_lora_cached_reference_is_filled_before_training(env, tmp_path, monkeypatch):
    """One process: a LoRA policy's cached reference (adapter disabled) is computed before
    step 1, so no training step runs a reference forward (as with a copy reference)."""
    from feedalign.trainers import TrainerCallback
    from feedalign.policies.reference import PolicyAdapterReference

    calls = []
    real = PolicyAdapterReference.logps
    monkeypatch.setattr(PolicyAdapterReference, "logps", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    seen = []

    class AtStep(TrainerCallback):
        def on_step_end(self, step, metrics):
            seen.append(len(calls))

    out = tmp_path / "lora"
    from test_trainers_packing import base_config
    from feedalign.trainers import train

    cfg = base_config(env["model"], out, _pair_sources(env)[:1], max_steps=3, eval_fraction=0.2, eval_every=3,
                      packing=True)
    cfg["model"]["lora"] = {"r": 4, "alpha": 8}
    cfg["reference"] = {"strategy": "cached", "cache_dir": str(out / "cache")}
    train(cfg, callbacks=[AtStep()])
    assert calls and seen == [len(calls)] * 3
