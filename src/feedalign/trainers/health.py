"""Signs that a run is collapsing while its losses look fine.

A policy can drive its loss down by degenerating (one repeated phrase, an answer to no
question) while loss, accuracy and the reference point all look healthy. These checks look
at what the model GENERATES and at trends the losses hide:

* ``distinct_n``        distinct word n-grams / all word n-grams over a set of samples
                        (1 = no n-gram repeats anywhere; a collapsed model drives it to ~0).
* ``repetition_rate``   mean over samples of 1 - distinct/total word 3-grams WITHIN a sample.
* ``sequence_kl``       mean of log pi(y|x) - log pi_ref(y|x) over samples y ~ pi: a Monte-Carlo
                        estimate of the sequence-level KL(pi || pi_ref) in nats.
* ``trend_warnings``    the implicit rewards of BOTH classes (desirable and undesirable,
                        or chosen and rejected) falling together over the run: the policy
                        lowers the likelihood of everything it was trained on.

Thresholds (documented in docs/real_model.md): repetition rate above ``REPETITION_LIMIT``
(0.5), sequence KL above ``KL_LIMIT`` (20 nats), both class rewards at the end below their
start by more than ``FALL_LIMIT`` (0.05, in reward units beta * log-ratio).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

REPETITION_LIMIT = 0.5
KL_LIMIT = 20.0
FALL_LIMIT = 0.05
_CLASS_PAIRS = (("rewards/desirable", "rewards/undesirable"), ("rewards/chosen", "rewards/rejected"))


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Iterable[str], n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over ``texts`` (NaN when there are none)."""
    grams = [g for t in texts for g in _ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition_rate(texts: Iterable[str], n: int = 3) -> float:
    """Mean over texts (with at least one n-gram) of 1 - distinct/total word n-grams."""
    rates = []
    for text in texts:
        grams = _ngrams(text.split(), n)
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def sequence_kl(policy_logps: Sequence[float], reference_logps: Sequence[float]) -> float:
    """Monte-Carlo KL(pi || pi_ref) from samples of pi: mean(logp_pi - logp_ref), nats."""
    diffs = [p - r for p, r in zip(policy_logps, reference_logps)]
    return sum(diffs) / len(diffs) if diffs else math.nan


def sample_warnings(metrics: Mapping[str, float], prefix: str = "health/") -> list[str]:
    """Warnings for sample metrics past their thresholds."""
    out = []
    rep = metrics.get(f"{prefix}repetition_rate")
    if rep is not None and rep > REPETITION_LIMIT:
        out.append(f"repetition rate {rep:.2f} > {REPETITION_LIMIT}: generations repeat themselves (collapse?)")
    kl = metrics.get(f"{prefix}kl")
    if kl is not None and kl > KL_LIMIT:
        out.append(f"sequence KL to the reference {kl:.1f} nats > {KL_LIMIT}: the policy drifted far")
    return out


def trend_warnings(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Warn when both classes' implicit rewards fall together from the first logged step to
    the last (per metric prefix, e.g. ``kto/rewards/desirable``)."""
    out = []
    keys = {k for r in records for k in r}
    for good, bad in _CLASS_PAIRS:
        for key in sorted(k for k in keys if k.endswith(good) and not k.startswith("eval/")):
            other = key[: -len(good)] + bad
            series = [(r[key], r[other]) for r in records
                      if _finite(r.get(key)) and _finite(r.get(other))]
            if len(series) < 2:
                continue
            (g0, b0), (g1, b1) = series[0], series[-1]
            if g1 < g0 - FALL_LIMIT and b1 < b0 - FALL_LIMIT:
                out.append(
                    f"{key} ({g0:.3g} -> {g1:.3g}) and {other} ({b0:.3g} -> {b1:.3g}) both fell: the policy "
                    "lowers the likelihood of good and bad answers alike (check samples for collapse)"
                )
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def generation_health(
    samples: Sequence[Any],
    policy_logps: Sequence[float] | None,
    reference_logps: Sequence[float] | None,
    judge: Callable[[list[str], list[str]], Sequence[float]] | None = None,
) -> dict[str, float]:
    """``health/*`` metrics of samples (``policies.generation.Sample``) from the policy:
    distinct-2, repetition rate, truncated fraction, the KL estimate (when log-probs are
    given) and the mean of ``judge(prompts, completions)``."""
    texts = [s.text for s in samples]
    metrics = {
        "health/distinct_2": distinct_n(texts, 2),
        "health/repetition_rate": repetition_rate(texts, 3),
        "health/truncated": sum(s.truncated for s in samples) / max(1, len(samples)),
    }
    if policy_logps is not None and reference_logps is not None:
        metrics["health/kl"] = sequence_kl(policy_logps, reference_logps)
    if judge is not None:
        scores = [float(v) for v in judge([s.prompt for s in samples], texts)]
        metrics["health/judge"] = sum(scores) / max(1, len(scores))
    return metrics


def _judge(target: str | None) -> Callable[[list[str], list[str]], Sequence[float]] | None:
    """``module:function`` -> the function (scores per (prompt, completion))."""
    if target is None:
        return None
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def eval_generation(run: Any) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Sample from ``train.eval_generate`` held-out prompts (the sources' own rendering, so
    chat rows go through the chat template) and measure them: ``generation_health`` with
    the sequence KL to the reference (when the reference can score new rows) and the
    ``train.eval_judge``. Returns (metrics, samples as dicts)."""
    import torch

    from feedalign.data.batching import move_to
    from feedalign.data.collate import pad_batch, tokenize_example
    from feedalign.policies.generation import sample
    from feedalign.policies.hf import batch_logps
    from feedalign.policies.reference import CachedReference

    cfg, runtime = run.config.train, run.runtime
    prompts = list(dict.fromkeys(ex.prompt for s in run.sources for ex in s.eval_examples))[: cfg.eval_generate]
    if not prompts:
        return {}, []
    samples = sample(runtime.model, runtime.tokenizer, prompts, max_new_tokens=cfg.eval_max_new_tokens,
                     temperature=1.0, seed=cfg.seed + run.step)
    rows = [tokenize_example(runtime.tokenizer, s.prompt, s.text, 1 << 30, truncated=s.truncated, min_prompt_length=0)
            for s in samples]
    batch = move_to(pad_batch(rows, runtime.pad_id), run.accelerator.device)
    own = ref = None
    reference = runtime.reference
    with torch.no_grad():
        was_training = runtime.model.training
        runtime.model.eval()
        try:
            own = batch_logps(runtime.model, batch).tolist()
        finally:
            runtime.model.train(was_training)
        if reference is not None and not isinstance(reference, CachedReference):
            ref = reference.logps(batch, [f"health/{i}" for i in range(len(rows))]).tolist()
    metrics = generation_health(samples, own, ref if ref is not None else None, _judge(cfg.eval_judge))
    if ref is None:
        metrics.pop("health/kl", None)
    records = [{"step": run.step, "prompt": s.prompt, "completion": s.text, "truncated": s.truncated}
               for s in samples]
    return metrics, records


SAMPLES_FILE = "samples.jsonl"


def log_generation(run: Any) -> dict[str, float]:
    """``eval_generation`` at an evaluation: samples appended to ``output_dir/samples.jsonl``,
    threshold crossings warned about; returns the ``health/*`` metrics."""
    import json
    import logging

    metrics, records = eval_generation(run)
    run.out.mkdir(parents=True, exist_ok=True)
    with open(run.out / SAMPLES_FILE, "a", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    for warning in sample_warnings(metrics):
        logging.getLogger("feedalign.train").warning("step %d: %s", run.step, warning)
    return metrics


def warn_run(output_dir: Any) -> list[str]:
    """All health warnings of a finished run (from its metrics.jsonl), logged once."""
    import logging

    from feedalign.trainers.logging import read_metrics

    records = read_metrics(output_dir)
    found = trend_warnings(records)
    for record in records:
        found += [f"step {record['step']}: {w}" for w in sample_warnings(record)]
    for warning in found:
        logging.getLogger("feedalign.train").warning("health: %s", warning)
    return found
