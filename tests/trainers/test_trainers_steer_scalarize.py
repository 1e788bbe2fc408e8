"""``steer.mode: scalarize``: one source per objective, any loss; the weight enters through
the draws (Dirichlet(alpha + e_k)) and the prompt, not through loss hyperparameters."""

from __future__ import annotations

import numpy as np
import pytest
from trainer_fixtures import base_config, labeled_rows, pair_rows, save_tiny_model, write_jsonl

from feedalign.config.errors import ConfigError
from feedalign.multiobjective import draws
from feedalign.multiobjective.steering import load_spec
from feedalign.trainers.loop import train

STEER = {"objectives": ["helpful", "concise"], "grid": 10, "render": "tokens", "seed": 3, "mode": "scalarize",
         "concentration": 0.5, "draws": 2}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer_scalarize")
    return (save_tiny_model(root / "model"), write_jsonl(root / "pairs.jsonl", pair_rows(40, seed=1)),
            write_jsonl(root / "thumbs.jsonl", labeled_rows(40, seed=2)))


def _sources(pairs, thumbs):
    return [{"name": "h", "path": str(pairs), "loss": "dpo", "objective": "helpful", "steer": dict(STEER)},
            {"name": "c", "path": str(thumbs), "loss": "kto", "objective": "concise", "steer": dict(STEER)}]


def test_two_sources_any_loss_train_one_model_that_serves_every_weight(env, tmp_path, monkeypatch):
    model_dir, pairs, thumbs = env
    seen = {}
    original = draws.redraw_examples

    def recording(examples, spec, tokenizer, max_length):
        out = original(examples, spec, tokenizer, max_length)
        seen[spec.trained] = np.array([ex.steer_weights for ex in out])
        return out

    monkeypatch.setattr(draws, "redraw_examples", recording)
    train(base_config(model_dir, tmp_path / "out", _sources(pairs, thumbs), max_steps=2))
    spec = load_spec(tmp_path / "out" / "final")
    assert spec.trained is None and spec.mode == "scalarize" and spec.concentration == 0.5
    assert spec.snap([0.0, 1.0]).tolist() == [0.0, 1.0]  # no MODPO bound on w_k
    # each source's draws lean to its own objective: E[w_k] = (alpha + 1) / (2 alpha + 1) = 0.75
    assert seen["helpful"][:, 0].mean() > 0.6 and seen["concise"][:, 1].mean() > 0.6
    assert seen["helpful"].shape[0] == 2 * 40  # two draws of every pair


def test_modpo_mode_still_refuses_a_loss_without_per_example_weights(env, tmp_path):
    model_dir, pairs, thumbs = env
    source = {**_sources(pairs, thumbs)[0], "steer": {**STEER, "mode": "modpo"}}
    with pytest.raises(ConfigError, match=r"data\.0\.steer") as info:
        train(base_config(model_dir, tmp_path / "out", [source]))
    assert "scalarize" in str(info.value)
