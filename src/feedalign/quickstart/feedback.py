"""Simulated feedback of every kind, from the ground-truth scorers, on samples of the reference.

The pool: ``k`` completions of the reference (SFT) policy for each training prompt, each
scored on every objective. From it (all draws from one seeded generator):

* pairs on objective ``o`` (Bradley-Terry annotator): per prompt, one random pair of samples
  whose ``o`` scores differ; the first is preferred with probability
  ``sigma((s_1 - s_2) / T)``. Pairs with equal scores carry no preference and are not asked.
* thumbs on ``o`` (logistic annotator): every sample gets a thumbs-up with probability
  ``sigma((s - c) / T)``, ``c`` = the pool's mean ``o`` score, so the classes are balanced-ish.
* accepted / rejected on a weighted score ``w . s``: per prompt, the best sample is accepted
  (positive-only set) and the worst rejected (negative-only set), when they differ (the
  top-k / bottom-k selection of PMPO, with k = 1).

Empty completions (the policy ended at once) are not shown to annotators: the data loader
rejects rows without a completion, as it would in a user's file.

Each set is written as JSONL in the usual columns (``prompt/chosen/rejected`` for pairs,
``prompt/completion/label`` for the rest) and read back with
:func:`feedalign.data.load_records`, exactly as a user's files would be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from feedalign.data.records import LabeledRecord, PairRecord


@dataclass
class SamplePool:
    """``samples`` completions for each prompt: ``completions[i][j]`` is sample j of prompt i;
    ``scores[o]`` is ``[n_prompts, samples]``."""

    prompts: list[str]
    completions: list[list[str]]
    scores: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.prompts), len(self.completions[0]) if self.completions else 0

    def weighted(self, weights: dict[str, float]) -> np.ndarray:
        """``sum_o w_o * scores[o]``, ``[n_prompts, samples]``."""
        n, k = self.shape
        out = np.zeros((n, k))
        for name, w in weights.items():
            out += w * self.scores[name]
        return out


def sample_pool(model: Any, tokenizer: Any, task: Any, prompts: list[str], samples: int, *,
                max_new_tokens: int, temperature: float, seed: int, batch_size: int) -> SamplePool:
    """``samples`` completions per prompt from ``model``, scored by ``task``."""
    from feedalign.policies.hf import generate

    flat_prompts = [p for p in prompts for _ in range(samples)]
    flat = generate(model, tokenizer, flat_prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                    seed=seed, batch_size=batch_size)
    scores = task.score_many(flat_prompts, flat)
    completions = [flat[i * samples:(i + 1) * samples] for i in range(len(prompts))]
    return SamplePool(list(prompts), completions, {o: v.reshape(len(prompts), samples) for o, v in scores.items()})


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def bt_pairs(pool: SamplePool, objective: str, *, temperature: float, rng: np.random.Generator,
             name: str) -> list[PairRecord]:
    """One Bradley-Terry judged pair per prompt (prompts whose samples all tie give none)."""
    scores = pool.scores[objective]
    out = []
    for i, prompt in enumerate(pool.prompts):
        texts = pool.completions[i]
        candidates = [(a, b) for a in range(len(texts)) for b in range(a + 1, len(texts))
                      if scores[i, a] != scores[i, b] and texts[a] != texts[b] and texts[a] and texts[b]]
        if not candidates:
            continue
        a, b = candidates[int(rng.integers(len(candidates)))]
        if rng.random() < 0.5:  # present the two in random order
            a, b = b, a
        first_wins = rng.random() < float(_sigmoid((scores[i, a] - scores[i, b]) / temperature))
        chosen, rejected = (a, b) if first_wins else (b, a)
        out.append(PairRecord(prompt, texts[chosen], texts[rejected], objective=objective, id=f"{name}-{i}"))
    return out


def logistic_thumbs(pool: SamplePool, objective: str, *, temperature: float, rng: np.random.Generator,
                    name: str) -> list[LabeledRecord]:
    """A thumbs up/down on every sample: up with probability sigma((s - mean s) / T)."""
    scores = pool.scores[objective]
    p_up = _sigmoid((scores - scores.mean()) / temperature)
    labels = rng.random(scores.shape) < p_up
    return [
        LabeledRecord(prompt, pool.completions[i][j], bool(labels[i, j]), objective=objective, id=f"{name}-{i}-{j}")
        for i, prompt in enumerate(pool.prompts)
        for j in range(scores.shape[1])
        if pool.completions[i][j]
    ]


def best_and_worst(pool: SamplePool, weights: dict[str, float], *, rng: np.random.Generator,
                   names: tuple[str, str]) -> tuple[list[LabeledRecord], list[LabeledRecord]]:
    """(accepted, rejected): the best and the worst sample of each prompt on ``w . s`` (ties
    broken at random; prompts whose samples all score alike give neither)."""
    scores = pool.weighted(weights)
    accepted, rejected = [], []
    for i, prompt in enumerate(pool.prompts):
        row = scores[i] + 1e-9 * rng.random(scores.shape[1])  # random tie-break
        row[[not text for text in pool.completions[i]]] = np.nan
        if np.isnan(row).all():
            continue
        best, worst = int(np.nanargmax(row)), int(np.nanargmin(row))
        if scores[i, best] <= scores[i, worst]:
            continue
        accepted.append(LabeledRecord(prompt, pool.completions[i][best], True, id=f"{names[0]}-{i}"))
        rejected.append(LabeledRecord(prompt, pool.completions[i][worst], False, id=f"{names[1]}-{i}"))
    return accepted, rejected


def simulate_feedback(pool: SamplePool, *, seed: int, pair_temperature: float,
                      thumb_temperature: float) -> dict[str, list[Any]]:
    """Every feedback set of the quickstart (keys of ``settings.FEEDBACK_SETS`` except the
    SFT demonstrations), from one seeded generator."""
    rng = np.random.default_rng([seed, 1234])
    accepted, rejected = best_and_worst(
        pool, {"helpful": 0.5, "concise": 0.5}, rng=rng, names=("accepted_overall", "rejected_overall")
    )
    return {
        "pairs_helpful": bt_pairs(pool, "helpful", temperature=pair_temperature, rng=rng, name="pairs_helpful"),
        "thumbs_helpful": logistic_thumbs(pool, "helpful", temperature=thumb_temperature, rng=rng, name="thumbs_helpful"),
        "thumbs_concise": logistic_thumbs(pool, "concise", temperature=thumb_temperature, rng=rng, name="thumbs_concise"),
        "accepted_overall": accepted,
        "rejected_overall": rejected,
    }


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
    pairs = sum(isinstance(r, PairRecord) for r in records)
    up = sum(isinstance(r, LabeledRecord) and r.label for r in records)
    down = sum(isinstance(r, LabeledRecord) and not r.label for r in records)
    out = {"pairs": pairs} if pairs else {}
    if up or down:
        out.update(up=up, down=down)
    return out
