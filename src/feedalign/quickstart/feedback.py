"""Simulated feedback of every kind on samples of the reference policy, written as real files.

The pool: ``k`` completions of the reference (SFT) policy for each training prompt. The
annotators of :mod:`feedalign.envs.annotators` judge them with the task's ground-truth
scorers (``T`` is the annotator temperature):

* ``pairs_helpful``    Bradley-Terry: each prompt's samples paired two by two at random, the
                       first preferred with probability ``sigma((h_1 - h_2) / T)`` (a tie is a
                       coin flip, as for a real annotator asked to choose);
* ``thumbs_<o>``       a thumbs-up on every sample with probability
                       ``sigma((s_o - c(x)) / T)``, ``c(x)`` = the mean score of the prompt's samples;
* ``accepted_overall`` / ``rejected_overall``: the best / the worst sample of each prompt on
                       ``0.5*helpful + 0.5*concise`` (positive-only and negative-only sets,
                       PMPO's top-k / bottom-k selection with k = 1).

Empty completions (the policy stopped at once) are not shown to annotators: the data loader
rejects rows without a completion, as it would in a user's file. Every set is written as JSONL
in the usual columns (``prompt/chosen/rejected`` for pairs, ``prompt/completion/label`` for the
rest) with unique ids and read back with :func:`feedalign.data.load_records`, exactly as a
user's files would be.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from feedalign.data.records import LabeledRecord, PairRecord

OVERALL = {"helpful": 0.5, "concise": 0.5}


@dataclass
class SamplePool:
    """``samples`` completions per prompt, flattened: ``samples[i] = (prompt, completion)``;
    ``scores[o]`` is ``[len(samples)]``."""

    samples: list[tuple[str, str]]
    scores: dict[str, np.ndarray]

    def judged(self) -> list[tuple[str, str]]:
        """The samples annotators see: those with a non-empty completion."""
        return [(p, c) for p, c in self.samples if c.strip()]


def sample_pool(model: Any, tokenizer: Any, task: Any, prompts: list[str], samples: int, *,
                max_new_tokens: int, temperature: float, seed: int, batch_size: int) -> SamplePool:
    """``samples`` completions per prompt from ``model``, scored by ``task``."""
    from feedalign.policies.hf import generate

    flat_prompts = [p for p in prompts for _ in range(samples)]
    flat = generate(model, tokenizer, flat_prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                    seed=seed, batch_size=batch_size)
    return SamplePool(list(zip(flat_prompts, flat)), task.score_many(flat_prompts, flat))


def _with_ids(records: list[Any], name: str) -> list[Any]:
    # Explicit, unique ids: the same completion sampled twice and judged alike is two data
    # points, not one duplicated row.
    return [replace(r, id=f"{name}-{i}") for i, r in enumerate(records)]


def simulate_feedback(pool: SamplePool, scorer: Any, *, seed: int, pair_temperature: float,
                      thumb_temperature: float) -> dict[str, list[Any]]:
    """Every feedback set of the quickstart (keys of ``settings.FEEDBACK_SETS`` but the SFT
    demonstrations); each annotator has its own seed derived from ``seed``."""
    from feedalign.envs import annotators as ann

    samples = pool.judged()
    seeds = np.random.SeedSequence([seed, 1234]).generate_state(6)
    sets = {
        "pairs_helpful": ann.bt_pairs(samples, scorer, objective="helpful", temperature=pair_temperature,
                                      seed=int(seeds[0])),
        "thumbs_helpful": ann.logistic_thumbs(samples, scorer, objective="helpful", temperature=thumb_temperature,
                                              seed=int(seeds[1])),
        "thumbs_concise": ann.logistic_thumbs(samples, scorer, objective="concise", temperature=thumb_temperature,
                                              seed=int(seeds[2])),
        "accepted_overall": ann.positive_only(samples, scorer, weights=OVERALL, top_k=1, seed=int(seeds[3])),
        "rejected_overall": ann.negative_only(samples, scorer, weights=OVERALL, bottom_k=1, seed=int(seeds[4])),
        "pairs_concise": ann.bt_pairs(samples, scorer, objective="concise", temperature=pair_temperature,
                                      seed=int(seeds[5])),
    }
    return {name: _with_ids(records, name) for name, records in sets.items()}


def simulate_polite_feedback(pool: SamplePool, scorer: Any, *, seed: int, thumb_temperature: float) -> dict[str, list[Any]]:
    """The third objective's set (``objectives=3`` only): ``thumbs_polite``, logistic thumbs on
    ``polite`` judged by ``scorer`` (a task with ``polite=True``), with a seed of its own so the
    other sets are those of a two-objective run."""
    from feedalign.envs import annotators as ann

    seeds = np.random.SeedSequence([seed, 1235]).generate_state(1)
    records = ann.logistic_thumbs(pool.judged(), scorer, objective="polite", temperature=thumb_temperature,
                                  seed=int(seeds[0]))
    return {"thumbs_polite": _with_ids(records, "thumbs_polite")}


def write_and_reload(sets: dict[str, list[Any]], directory: Path) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """Write each set to ``directory/<name>.jsonl``, load it back through the validating loader
    and count it. Returns (paths, counts) with counts like ``{"pairs": n}`` or
    ``{"up": n, "down": n}``."""
    from feedalign.data import load_records, save_jsonl

    directory.mkdir(parents=True, exist_ok=True)
    paths, counts = {}, {}
    for name, records in sets.items():
        path = directory / f"{name}.jsonl"
        save_jsonl(records, path)
        loaded = load_records(path).records
        if len(loaded) != len(records):
            raise RuntimeError(f"{path}: wrote {len(records)} records but read back {len(loaded)}")
        paths[name] = path
        counts[name] = count_records(loaded)
    return paths, counts


def count_records(records: list[Any]) -> dict[str, int]:
    """``{"pairs": n}`` for pairs, ``{"up": n, "down": n}`` for labeled records."""
    pairs = sum(isinstance(r, PairRecord) for r in records)
    up = sum(isinstance(r, LabeledRecord) and r.label for r in records)
    down = sum(isinstance(r, LabeledRecord) and not r.label for r in records)
    out = {"pairs": pairs} if pairs else {}
    if up or down or not out:
        out.update(up=up, down=down)
    return out
