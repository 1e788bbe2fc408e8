"""Steerable training (``steer:``): one run, one weight vector per example, in the prompt and
in that example's MODPO loss (docs/ALGORITHMS.md §10)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
import torch
from trainer_fixtures import (
    assert_states_equal,
    base_config,
    final_state,
    pair_rows,
    save_tiny_model,
    write_jsonl,
)

from feedalign.config.errors import ConfigError
from feedalign.losses import get_loss, list_losses
from feedalign.losses._registry import register_loss
from feedalign.losses.multiobjective import modpo_loss
from feedalign.multiobjective.steering import load_spec
from feedalign.trainers import forward as forward_mod
from feedalign.trainers.loop import train
from feedalign.trainers.run import TrainerCallback

PROBE = "steer_probe_modpo"
CALLS: list[dict[str, torch.Tensor]] = []
MARGIN_PROMPTS: list[str] = []


def _probe(
    policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *,
    chosen_margins, rejected_margins, beta: float = 0.1, weight=0.5, margin_weights=(0.5,),
):
    """modpo with the same signature, recording the per-example weights it was given."""
    CALLS.append({"weight": torch.as_tensor(weight).detach().cpu().clone(),
                  "margin_weights": torch.as_tensor(margin_weights).detach().cpu().clone()})
    return modpo_loss(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
        chosen_margins=chosen_margins, rejected_margins=rejected_margins, beta=beta, weight=weight,
        margin_weights=margin_weights,
    )


if PROBE not in list_losses():
    modpo = get_loss("modpo")
    register_loss(PROBE, feedback="pair", needs_reference=modpo.needs_reference, state=modpo.state,
                  validators={k: modpo.validators[k] for k in ("beta", "weight", "margin_weights")})(_probe)


def recording_margins(prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
    MARGIN_PROMPTS.extend(prompts)
    return torch.tensor([[-float(len(c))] for c in completions])


STEER = {"objectives": ["helpful", "concise"], "grid": 4, "render": "tokens", "seed": 3}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer")
    model = save_tiny_model(root / "model")
    pairs = write_jsonl(root / "pairs.jsonl", pair_rows(24, seed=1, objective="helpful"))
    return model, pairs


def _source(pairs, loss="modpo", target="test_trainers_steer:recording_margins"):
    return {
        "path": str(pairs), "loss": loss, "objective": "helpful", "hparams": {"beta": 0.1},
        "margins": {"kind": "callable", "target": target}, "steer": dict(STEER),
    }


def test_steered_modpo_trains_with_per_example_weights(env, tmp_path, monkeypatch):
    model_dir, pairs = env
    batches = []
    original = forward_mod.collate

    def recording_collate(examples, feedback, pad_id, **kwargs):
        batch = original(examples, feedback, pad_id, **kwargs)
        batches.append(batch)
        return batch

    monkeypatch.setattr(forward_mod, "collate", recording_collate)
    CALLS.clear()
    MARGIN_PROMPTS.clear()
    cfg = base_config(model_dir, tmp_path / "out", [_source(pairs, loss=PROBE)], max_steps=3,
                      eval_fraction=0.25, eval_every=3)
    result = train(cfg)

    spec = load_spec(tmp_path / "out" / "final")
    assert spec.objectives == ("helpful", "concise") and spec.trained == "helpful"
    assert (spec.grid, spec.seed, spec.render, spec.beta) == (4, 3, "tokens", 0.1)
    level_ids = set(result.tokenizer.convert_tokens_to_ids(spec.level_tokens()))
    assert len(level_ids) == 5 and min(level_ids) >= 12  # added after the 4 specials + 8 letters
    assert result.model.get_input_embeddings().weight.shape[0] == len(result.tokenizer)

    # 3 training batches + evaluation batches, each followed by one loss call.
    assert len(batches) == len(CALLS) >= 4
    seen_weights = set()
    for batch, call in zip(batches, CALLS):
        ws = batch.extras["steer_weights"]
        for prompt, row, w in zip(batch.prompts, batch.tensors["input_ids"].tolist(), ws.tolist()):
            parsed, plain = spec.parse_prompt(prompt)
            assert parsed is not None and parsed.tolist() == pytest.approx(w)  # prefix carries w
            assert sum(1 for t in row if t in level_ids) == 2  # the model sees the level tokens
            assert abs(sum(w) - 1) < 1e-9 and w[0] >= 0.25  # trained w_k >= one grid step
            seen_weights.add(tuple(w))
        assert torch.allclose(call["weight"], ws[:, 0].float())
        assert torch.allclose(call["margin_weights"], ws[:, 1:].float())
        assert call["weight"].shape == (batch.size,) and call["margin_weights"].shape == (batch.size, 1)
    assert len(seen_weights) >= 3, "weights must differ across examples"
    # Margin rewards score the task prompt, not the steering prefix.
    assert MARGIN_PROMPTS and not any(p.startswith("<w") for p in MARGIN_PROMPTS)


def test_weights_are_a_function_of_example_id(env, tmp_path, monkeypatch):
    """Eval examples are weighted too, and the weight of an example does not depend on the
    split or the run (the spec's seed and the example's id decide it)."""
    from feedalign.multiobjective.steering import spec_for_source
    from feedalign.trainers import setup as setup_mod

    model_dir, pairs = env
    seen = {}
    original = setup_mod.steer_examples

    def recording(examples, spec):
        out = original(examples, spec)
        seen.update({ex.id: ex.steer_weights for ex in out})
        return out

    monkeypatch.setattr(setup_mod, "steer_examples", recording)
    cfg = base_config(model_dir, tmp_path / "out", [_source(pairs)], max_steps=1, eval_fraction=0.5)
    train(cfg)
    spec = spec_for_source(STEER, trained="helpful", beta=0.1)
    ids = sorted(seen)
    assert len(ids) == 24
    assert [list(w) for w in spec.weights_for(ids)] == [list(seen[i]) for i in ids]


def test_steer_requires_per_example_weight_inputs(env, tmp_path):
    model_dir, pairs = env
    source = {"path": str(pairs), "loss": "dpo", "objective": "helpful", "steer": dict(STEER)}
    with pytest.raises(ConfigError, match=r"data\.0\.steer") as info:
        train(base_config(model_dir, tmp_path / "out", [source]))
    assert "weight" in str(info.value)


def test_steer_text_render_on_char_tokenizer_is_a_config_error(env, tmp_path):
    model_dir, pairs = env
    source = _source(pairs)
    source["steer"] = {**STEER, "render": "text"}
    with pytest.raises(ConfigError, match=r"data\.0\.steer"):
        train(base_config(model_dir, tmp_path / "out", [source]))


def test_steer_unknown_key_is_a_config_error(env, tmp_path):
    model_dir, pairs = env
    source = _source(pairs)
    source["steer"] = {**STEER, "grids": 4}
    with pytest.raises(ConfigError, match=r"data\.0\.steer"):
        train(base_config(model_dir, tmp_path / "out", [source]))


class _CrashAfterSave(TrainerCallback):
    def on_save(self, step, path):
        if step == 2:
            raise KeyboardInterrupt("simulated crash")


def test_steered_resume_equals_uninterrupted(env, tmp_path):
    model_dir, pairs = env
    data = [_source(pairs, target="trainer_fixtures:length_margins")]
    full_cfg = base_config(model_dir, tmp_path / "full", data, max_steps=4, save_every=2, lr=3e-3)
    train(full_cfg)
    cfg = {**full_cfg, "train": {**full_cfg["train"], "output_dir": str(tmp_path / "run")}}
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_CrashAfterSave()])
    resumed = train(cfg, resume=True)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "step-00000002"
    assert_states_equal(final_state(tmp_path / "full"), final_state(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "final" / "steering.json").read_text())
    assert saved["objectives"] == ["helpful", "concise"]


def test_reference_scores_the_plain_prompt(env, tmp_path, monkeypatch):
    """The reference policy never saw a steering prefix: it scores each completion after the
    task prompt alone, while the policy sees prefix + prompt (ALGORITHMS.md §10's target is
    pi_ref(y|x) exp(r_w / beta))."""
    from feedalign.multiobjective.steering import load_spec
    from feedalign.policies.reference import CopyReference, example_tokens

    model_dir, pairs = env
    seen = []
    original = CopyReference.logps

    def recording(ref, batch, example_keys=None):
        seen.extend(ids for ids, _ in example_tokens(batch))
        return original(ref, batch, example_keys)

    monkeypatch.setattr(CopyReference, "logps", recording)
    policy_rows = []
    real_collate = forward_mod.collate

    def recording_collate(examples, feedback, pad_id, **kwargs):
        batch = real_collate(examples, feedback, pad_id, **kwargs)
        policy_rows.extend(batch.tensors["input_ids"].tolist())
        return batch

    monkeypatch.setattr(forward_mod, "collate", recording_collate)
    for packing in (False, True):
        seen.clear()
        out = tmp_path / f"out{packing}"
        train(base_config(model_dir, out, [_source(pairs)], max_steps=2, packing=packing))
        spec = load_spec(out / "final")
        from feedalign.policies.hf import load_tokenizer

        level_ids = set(load_tokenizer(str(out / "final")).convert_tokens_to_ids(spec.level_tokens()))
        assert len(seen) == 2 * 2 * 4  # 2 steps x (4 chosen + 4 rejected rows)
        assert not any(set(row) & level_ids for row in seen)
        assert any(set(row) & level_ids for row in policy_rows)
