"""A loss's ``kl`` input from reference samples (``kl_samples``): negative-only PMPO on a tiny
causal LM, exact resume, config errors and the in-batch-KL warning (ALGORITHMS.md §9)."""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
from trainer_fixtures import (
    assert_states_equal,
    base_config,
    labeled_rows,
    model_state,
    save_tiny_model,
    write_jsonl,
)

from feedalign.config import ConfigError
from feedalign.trainers import TrainerCallback, train
from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers.setup import load_kl_samples

NEGATIVE_ONLY = {"alpha": 0.0, "beta": 1.0}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny model, a negative-only set, and completions SAMPLED FROM that model (the
    reference): 24 for the KL estimate in training, the rest held out to measure the KL."""
    from feedalign.policies.hf import generate, load_causal_lm, load_tokenizer

    root = tmp_path_factory.mktemp("pmpo_kl")
    model_dir = save_tiny_model(root / "model")
    model, tokenizer = load_causal_lm(str(model_dir)), load_tokenizer(str(model_dir))
    rng = random.Random(7)
    prompts = ["".join(rng.choice("abcdefgh") for _ in range(4)) for _ in range(80)]
    completions = generate(model, tokenizer, prompts, max_new_tokens=5, seed=3)
    samples = [{"prompt": p, "completion": c} for p, c in zip(prompts, completions) if c]
    assert len(samples) >= 48
    negatives = labeled_rows(12, seed=3, labels="down", prefix="n")
    paths = {
        "model": model_dir,
        "negatives": write_jsonl(root / "negatives.jsonl", negatives),
        "kl_samples": write_jsonl(root / "kl_samples.jsonl", samples[:24]),
    }
    return paths, negatives, samples[:24], samples[24:]


def _source(paths, **extra):
    source = {"path": str(paths["negatives"]), "loss": "pmpo", "name": "failures", "hparams": NEGATIVE_ONLY}
    return {**source, **extra}


def _mean_log_ratio(model, reference, tokenizer, rows) -> float:
    """mean over rows of logp_theta(y|x) - logp_ref(y|x)."""
    from feedalign.data.collate import pad_batch, tokenize_example
    from feedalign.policies.hf import sequence_logps

    batch = pad_batch([tokenize_example(tokenizer, r["prompt"], r["completion"], 64) for r in rows], 0)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    with torch.no_grad():
        return float((sequence_logps(model, *args) - sequence_logps(reference, *args)).mean())


def _train_negative_only(paths, out, beta):
    hparams = {"alpha": 0.0, "beta": beta}
    source = _source(paths, kl_samples=str(paths["kl_samples"]), kl_batch_size=8, hparams=hparams)
    return train(base_config(paths["model"], out, [source], max_steps=15, lr=3e-3))


def test_negative_only_with_reference_samples_pushes_negatives_down_and_stays_close(env, tmp_path):
    from feedalign.policies.hf import load_causal_lm

    paths, negatives, _, held_out = env
    reference = load_causal_lm(str(paths["model"]))
    moved, held_out_kl = {}, {}
    for beta in (1.0, 0.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # beta = 0 is below PMPO's collapse threshold
            result = _train_negative_only(paths, tmp_path / f"beta{beta}", beta)
        model = result.model.eval()
        moved[beta] = _mean_log_ratio(model, reference, result.tokenizer, negatives)
        # Fresh reference samples: mean(logp_ref - logp_theta) is an unbiased KL(pi_ref||pi_theta).
        held_out_kl[beta] = -_mean_log_ratio(model, reference, result.tokenizer, held_out)
        assert math.isfinite(result.metrics["failures/kl"])
    # The negatives lost likelihood relative to the reference (about 14 nats) ...
    assert moved[1.0] < -5.0
    # ... while the policy stayed close to the reference (KL about 0.16 nats) ...
    assert 0.0 < held_out_kl[1.0] < 0.05 * abs(moved[1.0])
    # ... which is the KL term's doing: without it the same push drifts about 25x further.
    assert held_out_kl[0.0] > 5.0 * held_out_kl[1.0]


def test_in_batch_kl_on_negatives_warns_and_has_zero_gradient(env, tmp_path, capsys):
    # The bug kl_samples fixes: with the batch's own samples as the KL estimate and
    # alpha + beta = 1 the loss is (1 - alpha - beta)*logp + const = const.
    paths, _, _, _ = env
    cfg = base_config(paths["model"], tmp_path / "in_batch", [_source(paths)], max_steps=2, lr=1e-2)
    expected = r"data\.0 .*no kl_samples.*\(1 - alpha - beta\)\*logp.*data\.0\.kl_samples"
    with pytest.warns(UserWarning, match=expected):
        result = train(cfg)
    assert result.metrics["grad_norm"] == 0.0
    from feedalign.policies.hf import load_causal_lm

    assert_states_equal(model_state(result.model), model_state(load_causal_lm(str(paths["model"]))))
    # The progress bar names the run (the output directory's last component by default).
    assert "in_batch" in capsys.readouterr().err


class _CrashAfterSave(TrainerCallback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_save(self, step, path):
        if step == self.at_step:
            raise KeyboardInterrupt(f"simulated crash after saving {path}")


def test_resume_with_reference_samples_equals_uninterrupted(env, tmp_path):
    paths, _, samples, _ = env
    data = [_source(paths, kl_samples=str(paths["kl_samples"]), kl_batch_size=3)]
    # Evaluation (every 2 steps) uses a fixed reference micro-batch and must not move the sampler.
    cfg = base_config(paths["model"], tmp_path / "full", data, max_steps=4, save_every=2, grad_accum=2,
                      eval_fraction=0.25, eval_every=2, run_name="pmpo-kl")
    full = train(cfg)
    assert math.isfinite(full.eval_metrics["eval/loss/failures"])
    cfg = {**cfg, "train": {**cfg["train"], "output_dir": str(tmp_path / "resumed")}}
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_CrashAfterSave(2)])
    resumed = train(cfg, resume=True)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "step-00000002"
    assert_states_equal(model_state(full.model), model_state(resumed.model))
    a, b = ckpt.load_checkpoint(full.checkpoint), ckpt.load_checkpoint(resumed.checkpoint)
    assert a.state["kl_samplers"] == b.state["kl_samplers"]
    drawn = 4 * 2 * 3  # steps * grad_accum * kl_batch_size
    n = len(samples)
    assert a.state["kl_samplers"]["failures"] == {"epoch": drawn // n, "position": drawn % n, "size": n}


def test_kl_samples_ignore_labels_and_take_both_sides_of_pairs(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "ab", "completion": "cd"},
            {"prompt": "ab", "completion": "ef", "label": False},
            {"prompt": "gh", "chosen": "aa", "rejected": "bb"},
        ],
    )
    examples = load_kl_samples([str(path)])
    assert [(e.prompt, e.completion) for e in examples] == [("ab", "cd"), ("ab", "ef"), ("gh", "aa"), ("gh", "bb")]
    assert len({e.id for e in examples}) == 4


@pytest.mark.parametrize(
    ("change", "key", "match"),
    [
        ({"loss": "dpo", "hparams": {}}, "data.0.kl_samples", "takes no 'kl' input"),
        ({"kl_samples": None, "kl_batch_size": 2}, "data.0.kl_batch_size", "kl_samples is not"),
        ({"kl_samples": "missing.jsonl"}, "data.0.kl_samples", "file not found"),
        ({"kl_batch_size": 0}, "data.0.kl_batch_size", ">= 1"),
    ],
)
def test_kl_samples_config_errors(env, tmp_path, change, key, match):
    paths, _, _, _ = env
    source = {**_source(paths, kl_samples=str(paths["kl_samples"])), **change}
    with pytest.raises(ConfigError, match=match) as info:
        train(base_config(paths["model"], tmp_path / "run", [source]))
    assert info.value.key == key


def test_kl_samples_need_a_reference(env, tmp_path):
    paths, _, _, _ = env
    cfg = base_config(paths["model"], tmp_path / "run", [_source(paths, kl_samples=str(paths["kl_samples"]))])
    cfg["reference"] = {"strategy": "none"}
    with pytest.raises(ConfigError, match="needs reference log-probs") as info:
        train(cfg)
    assert info.value.key == "reference.strategy"
