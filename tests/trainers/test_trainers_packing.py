"""``train.packing``: padding-free micro-batches train exactly like padded ones (same losses,
same parameters up to fp32 summation order) for every feedback kind, every reference
strategy, reference samples joined to a batch, and evaluation."""

from __future__ import annotations

import json

import pytest
from trainer_fixtures import (
    assert_states_equal,
    base_config,
    labeled_rows,
    pair_rows,
    save_tiny_model,
    write_jsonl,
)

from feedalign.trainers import train

ATOL = 2e-5  # parameters after 3 AdamW steps at lr 1e-3, fp32


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("packing")
    return {
        "model": save_tiny_model(root / "model"),
        "pairs": write_jsonl(root / "pairs.jsonl", pair_rows(24, seed=1)),
        "thumbs": write_jsonl(root / "thumbs.jsonl", labeled_rows(24, seed=2)),
        "samples": write_jsonl(root / "samples.jsonl", labeled_rows(12, seed=3, prefix="s")),
    }


def _mixed_sources(env):
    return [
        {"path": str(env["pairs"]), "loss": "dpo", "name": "pairs"},
        {"path": str(env["thumbs"]), "loss": "kto", "name": "thumbs"},
        {"path": str(env["thumbs"]), "loss": "bco", "name": "thumbs_bco"},
        {"path": str(env["thumbs"]), "loss": "pmpo", "name": "thumbs_pmpo",
         "kl_samples": str(env["samples"]), "kl_batch_size": 3},
        {"path": str(env["pairs"]), "loss": "sft", "name": "sft", "weight": 0.5},
    ]


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith(("loss", "eval/loss"))} for r in rows]


def _run(env, out, sources, packing, **extra):
    model = extra.pop("model", {})
    reference = extra.pop("reference", None)
    cfg = base_config(env["model"], out, sources, max_steps=3, eval_fraction=0.2, eval_every=3,
                      packing=packing, **extra)
    cfg["model"].update(model)
    if reference is not None:
        cfg["reference"] = reference
    return train(cfg)


def _assert_same_training(padded, packed, out_a, out_b):
    for a, b in zip(_losses(out_a), _losses(out_b), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    assert_states_equal(padded, packed, atol=ATOL)


def _state(result):
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def test_mixed_feedback_packed_trains_like_padded(env, tmp_path, monkeypatch):
    from feedalign.policies import varlen

    sources = _mixed_sources(env)
    padded = _run(env, tmp_path / "padded", sources, False)
    segments = []
    real = varlen._per_sequence
    monkeypatch.setattr(varlen, "_per_sequence", lambda q, k, v, b, s: segments.append(len(b) - 1) or real(q, k, v, b, s))
    packed = _run(env, tmp_path / "packed", sources, True, share_prompt=False)
    # per-sequence attention ran, on packed rows of several sequences (pairs: 2 x 4 rows)
    assert segments and max(segments) >= 8
    assert packed.model.config._attn_implementation == "feedalign_varlen"
    assert padded.model.config._attn_implementation != "feedalign_varlen"
    _assert_same_training(_state(padded), _state(packed), tmp_path / "padded", tmp_path / "packed")
    assert {"eval/loss/pairs", "eval/loss/thumbs"} <= packed.eval_metrics.keys()
    # the run did move the weights, so equal parameters are not trivially equal
    from feedalign.policies.hf import load_causal_lm

    start = load_causal_lm(str(env["model"])).state_dict()
    assert any(float((start[k] - v).abs().max()) > 1e-3 for k, v in _state(packed).items())


@pytest.mark.parametrize("strategy", ["adapter", "cached"])
def test_lora_references_with_packing(env, tmp_path, strategy):
    sources = [{"path": str(env["pairs"]), "loss": "dpo", "name": "pairs"},
               {"path": str(env["thumbs"]), "loss": "kto", "name": "thumbs"}]
    runs = {}
    for packing in (False, True):
        out = tmp_path / f"{strategy}-{packing}"
        reference = {"strategy": strategy}
        if strategy == "cached":
            reference["cache_dir"] = str(out / "cache")
        runs[packing] = _run(env, out, sources, packing, model={"lora": {"r": 4, "alpha": 8}},
                             reference=reference, lr=1e-2)
    _assert_same_training(_state(runs[False]), _state(runs[True]), tmp_path / f"{strategy}-False",
                          tmp_path / f"{strategy}-True")


def test_packing_option_validates(env, tmp_path):
    from feedalign.config import ConfigError

    with pytest.raises(ConfigError, match="packing"):
        _run(env, tmp_path / "bad", _mixed_sources(env)[:1], "yes")


def test_explicit_attention_implementation_is_kept(env, tmp_path):
    sources = _mixed_sources(env)[:1]
    result = _run(env, tmp_path / "eager", sources, True, model={"attn_implementation": "eager"})
    assert result.model.config._attn_implementation == "eager"
    padded = _run(env, tmp_path / "padded", sources, False)
    _assert_same_training(_state(padded), _state(result), tmp_path / "padded", tmp_path / "eager")
