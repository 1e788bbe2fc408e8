"""Held-out evaluation: sample each policy on the test prompts, score with the ground truth.

Every policy samples the SAME held-out prompts with the same sampling seed, so the
reference and a trained policy are compared prompt by prompt: the improvement on the target
objective is the mean of per-prompt differences ``d_i = t(after_i) - t(before_i)`` and its
standard error is ``std(d) / sqrt(n)`` (samples of different policies are independent given
the prompt, so this is the usual paired standard error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PolicySamples:
    """Completions of one policy on the evaluation prompts and their scores ``[n]`` per objective."""

    completions: list[str]
    scores: dict[str, np.ndarray]
    well_formed: float
    mean_words: float
    kl: float | None = None  # estimate of KL(pi || pi_ref) on these samples


def sample_and_score(model: Any, tokenizer: Any, task: Any, prompts: Sequence[str], *, max_new_tokens: int,
                     temperature: float, seed: int, batch_size: int) -> PolicySamples:
    from feedalign.envs.text_task import count_words
    from feedalign.policies.hf import generate

    completions = generate(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, temperature=temperature,
                           seed=seed, batch_size=batch_size)
    scores = task.score_many(list(prompts), completions)
    well_formed = float(np.mean([task.is_well_formed(c) for c in completions]))
    mean_words = float(np.mean([count_words(c) for c in completions]))
    return PolicySamples(completions, scores, well_formed, mean_words)


def completion_logps(model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *,
                     max_length: int, batch_size: int = 256) -> np.ndarray:
    """``log pi(y|x)`` per (prompt, completion) (completion tokens + EOS), no gradient."""
    import torch

    from feedalign.data.collate import pad_batch, tokenize_example
    from feedalign.policies.hf import sequence_logps

    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                examples = [tokenize_example(tokenizer, p, c, max_length)
                            for p, c in zip(prompts[start:start + batch_size], completions[start:start + batch_size])]
                batch = pad_batch(examples, tokenizer.pad_token_id)
                out.append(sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"]))
    finally:
        model.train(was_training)
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def kl_estimate(policy: Any, reference: Any, tokenizer: Any, prompts: Sequence[str], samples: PolicySamples, *,
                max_length: int) -> float:
    """Monte-Carlo KL(pi || pi_ref) = mean over the policy's own samples of log pi - log pi_ref.
    (Samples cut at max_new_tokens are scored with an EOS appended: a small bias.)"""
    mine = completion_logps(policy, tokenizer, prompts, samples.completions, max_length=max_length)
    ref = completion_logps(reference, tokenizer, prompts, samples.completions, max_length=max_length)
    return float(np.mean(mine - ref))


def target_scores(samples: PolicySamples, objectives: Sequence[str], weights: Sequence[float]) -> np.ndarray:
    return sum(w * samples.scores[o] for o, w in zip(objectives, weights))


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    se = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return float(np.mean(values)), se


def compare(before: PolicySamples, after: PolicySamples, objectives: Sequence[str], weights: Sequence[float], *,
            margin: float, z: float) -> dict[str, Any]:
    """Before/after means per objective and on the target, the paired improvement, its
    standard error, and pass = (improvement >= margin) and (improvement >= z * se)."""
    per_objective = {}
    for o in objectives:
        b_mean, b_se = _mean_se(before.scores[o])
        a_mean, a_se = _mean_se(after.scores[o])
        d_mean, d_se = _mean_se(after.scores[o] - before.scores[o])
        per_objective[o] = {"before": b_mean, "before_se": b_se, "after": a_mean, "after_se": a_se,
                            "improvement": d_mean, "improvement_se": d_se}
    t_before, t_after = target_scores(before, objectives, weights), target_scores(after, objectives, weights)
    b_mean, _ = _mean_se(t_before)
    a_mean, _ = _mean_se(t_after)
    d_mean, d_se = _mean_se(t_after - t_before)
    passed = d_mean >= margin and d_mean >= z * d_se
    return {
        "per_objective": per_objective,
        "target": {"before": b_mean, "after": a_mean, "improvement": d_mean, "improvement_se": d_se,
                   "z_score": d_mean / d_se if d_se > 0 else 0.0},
        "passed": bool(passed),
    }


def policy_summary(samples: PolicySamples, objectives: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in objectives:
        mean, se = _mean_se(samples.scores[o])
        out[o] = {"mean": mean, "se": se}
    out["well_formed"] = samples.well_formed
    out["mean_words"] = samples.mean_words
    if samples.kl is not None:
        out["kl_to_reference"] = samples.kl
    return out
