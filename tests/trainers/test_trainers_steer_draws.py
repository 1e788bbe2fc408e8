"""Steerable training with ``steer.draws``: each training pair is shown under several seeded
weights; held-out pairs are not copied; resuming equals the uninterrupted run."""

from __future__ import annotations

import pytest
import torch
from trainer_fixtures import assert_states_equal, base_config, final_state, pair_rows, save_tiny_model, write_jsonl

from feedalign.multiobjective import draws, steering
from feedalign.trainers.loop import train
from feedalign.trainers.run import TrainerCallback

STEER = {"objectives": ["helpful", "concise"], "grid": 4, "render": "tokens", "seed": 3, "draws": 3}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer_draws")
    return save_tiny_model(root / "model"), write_jsonl(root / "pairs.jsonl", pair_rows(24, seed=1, objective="helpful"))


def _source(pairs):
    return {"path": str(pairs), "loss": "modpo", "objective": "helpful", "hparams": {"beta": 0.1},
            "margins": {"kind": "callable", "target": "trainer_fixtures:length_margins"}, "steer": dict(STEER)}


def test_training_pairs_are_drawn_under_several_weights(env, tmp_path, monkeypatch):
    model_dir, pairs = env
    seen = {}
    original = draws.redraw_examples

    def recording(examples, spec, tokenizer, max_length):
        out = original(examples, spec, tokenizer, max_length)
        seen["given"], seen["out"], seen["spec"] = list(examples), out, spec
        return out

    monkeypatch.setattr(draws, "redraw_examples", recording)
    train(base_config(model_dir, tmp_path / "out", [_source(pairs)], max_steps=2, eval_fraction=0.25))
    given, out, spec = seen["given"], seen["out"], seen["spec"]
    assert spec.draws == 3 and len(given) == 18 and len(out) == 54  # 6 of 24 held out, not copied
    per_id = {}
    for ex in out:
        per_id.setdefault(ex.id, []).append(ex.steer_weights)
    assert sorted(per_id) == sorted(ex.id for ex in given)
    assert all(len(ws) == 3 for ws in per_id.values())
    assert sum(len(set(ws)) > 1 for ws in per_id.values()) >= 15  # weights change between draws
    assert steering.load_spec(tmp_path / "out" / "final").draws == 3


class _CrashAfterSave(TrainerCallback):
    def on_save(self, step, path):
        if step == 2:
            raise KeyboardInterrupt("simulated crash")


def test_resume_with_draws_equals_uninterrupted(env, tmp_path):
    model_dir, pairs = env
    full = base_config(model_dir, tmp_path / "full", [_source(pairs)], max_steps=4, save_every=2, lr=3e-3)
    train(full)
    cfg = {**full, "train": {**full["train"], "output_dir": str(tmp_path / "run")}}
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_CrashAfterSave()])
    train(cfg, resume=True)
    assert_states_equal(final_state(tmp_path / "full"), final_state(tmp_path / "run"))


def test_lora_run_with_level_tokens_loads_for_generation(env, tmp_path):
    """A LoRA run that added the level tokens: the base is grown to the run's vocabulary
    before the adapter loads, and the loaded model has the trained run's embedding rows."""
    from feedalign.cli.train_cmd import load_for_generation

    model_dir, pairs = env
    cfg = base_config(model_dir, tmp_path / "out", [_source(pairs)], max_steps=2)
    cfg["model"]["lora"] = {"r": 4, "alpha": 8}
    result = train(cfg)
    model, tokenizer = load_for_generation(tmp_path / "out")
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == len(tokenizer) == result.model.get_input_embeddings().weight.shape[0]
    ids = tokenizer.convert_tokens_to_ids(steering.load_spec(tmp_path / "out" / "final").level_tokens())
    got = model.get_input_embeddings().weight[ids]
    want = result.model.get_input_embeddings().weight[ids].to(got.dtype)
    assert torch.allclose(got, want)
