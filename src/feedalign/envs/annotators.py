"""Simulated annotators: turn (prompt, completion) samples and a ground-truth scorer into
feedback records of every kind.

A *scorer* maps ``(prompt, completion)`` to ``{objective: score}`` (e.g. ``TextTask.score``).
Each annotator judges one scalar utility ``u(x, y)``: the score of a single ``objective``, or
the weighted sum ``sum_k weights[k] * score_k`` when ``weights`` are given.

Feedback models (``sigma`` is the logistic function, ``T`` a temperature > 0):

  * ``bt_pairs``        Bradley-Terry: P(a preferred to b) = sigma((u(a) - u(b)) / T)
  * ``logistic_thumbs`` P(thumbs up) = sigma((u(x, y) - c(x)) / T), threshold c(x)
  * ``positive_only``   the top-k per prompt, or the thumbs-up of ``logistic_thumbs``
  * ``negative_only``   the bottom-k per prompt, or the thumbs-down of ``logistic_thumbs``
  * ``scored``          every objective's score, optionally with Gaussian noise
  * ``flip_labels``     label noise: swap a pair / flip a thumb with probability ``rate``

``T = 0`` makes an annotator deterministic (ties broken at random). Samples are grouped by
prompt in order of first appearance; everything is reproducible from ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from feedalign.data.records import LabeledRecord, PairRecord, Record, ScoredRecord

Scorer = Callable[[str, str], Mapping[str, float]]
Samples = Sequence[tuple[str, str]]
Threshold = float | str | Callable[[str], float]
Seed = int | np.random.Generator


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


def group_by_prompt(samples: Samples) -> dict[str, list[str]]:
    """Completions per prompt, prompts in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for prompt, completion in samples:
        groups.setdefault(prompt, []).append(completion)
    return groups


def make_utility(
    scorer: Scorer, objective: str | None = None, weights: Mapping[str, float] | None = None
) -> Callable[[str, str], float]:
    """``u(x, y)``: one objective's score, or the weighted sum of several. Exactly one of
    ``objective`` / ``weights`` must be given; unknown objective names fail listing the
    scorer's objectives."""
    if (objective is None) == (weights is None):
        raise ValueError("annotator: give exactly one of objective=... or weights=...")
    wanted = {objective: 1.0} if objective is not None else dict(weights or {})
    cache: dict[tuple[str, str], float] = {}

    def utility(prompt: str, completion: str) -> float:
        key = (prompt, completion)
        if key not in cache:
            scores = scorer(prompt, completion)
            missing = sorted(set(wanted) - set(scores))
            if missing:
                raise ValueError(
                    f"annotator: objective(s) {missing} not scored; scorer gives {sorted(scores)}"
                )
            cache[key] = float(sum(w * scores[k] for k, w in wanted.items()))
        return cache[key]

    return utility


def _check_temperature(temperature: float) -> None:
    if temperature < 0:
        raise ValueError(f"annotator: temperature={temperature}; expected >= 0")


def _prefer_prob(diff: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 0:
        return np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    return _sigmoid(diff / temperature)


def _index_pairs(n: int, pairing: str, rng: np.random.Generator) -> list[tuple[int, int]]:
    if pairing == "disjoint":
        order = rng.permutation(n)
        return [(int(order[i]), int(order[i + 1])) for i in range(0, n - 1, 2)]
    if pairing == "all":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    raise ValueError(f"bt_pairs: pairing={pairing!r}; expected 'disjoint' or 'all'")


def bt_pairs(
    samples: Samples, scorer: Scorer, *, objective: str | None = None,
    weights: Mapping[str, float] | None = None, temperature: float = 0.1,
    pairing: str = "disjoint", max_pairs_per_prompt: int | None = None, seed: Seed = 0,
    tag: str | None = None,
) -> list[PairRecord]:
    """Bradley-Terry preferences between completions of the same prompt.

    P(a chosen over b) = sigma((u(a) - u(b)) / temperature). ``pairing="disjoint"`` pairs a
    random permutation of each prompt's completions two by two; ``"all"`` uses every pair.
    Pairs of identical texts are skipped. Records carry ``objective=tag or objective``.
    """
    _check_temperature(temperature)
    rng, utility = _rng(seed), make_utility(scorer, objective, weights)
    label = tag if tag is not None else objective
    records: list[PairRecord] = []
    for prompt, completions in group_by_prompt(samples).items():
        index_pairs = [
            (i, j) for i, j in _index_pairs(len(completions), pairing, rng)
            if completions[i] != completions[j]
        ]
        if max_pairs_per_prompt is not None and len(index_pairs) > max_pairs_per_prompt:
            keep = rng.choice(len(index_pairs), size=max_pairs_per_prompt, replace=False)
            index_pairs = [index_pairs[k] for k in sorted(keep)]
        for i, j in index_pairs:
            a, b = completions[i], completions[j]
            diff = np.array(utility(prompt, a) - utility(prompt, b))
            a_wins = rng.random() < float(_prefer_prob(diff, temperature))
            chosen, rejected = (a, b) if a_wins else (b, a)
            records.append(PairRecord(prompt=prompt, chosen=chosen, rejected=rejected,
                                      objective=label, source=f"annotator:bt[{len(records)}]"))
    return records


def _thresholds(groups: dict[str, list[str]], utility: Callable[[str, str], float],
                threshold: Threshold) -> dict[str, float]:
    if callable(threshold):
        return {p: float(threshold(p)) for p in groups}
    if isinstance(threshold, str):
        reducers = {"prompt_mean": np.mean, "prompt_median": np.median}
        if threshold not in reducers:
            raise ValueError(
                f"annotator: threshold={threshold!r}; expected a number, a callable or one of "
                f"{sorted(reducers)}"
            )
        return {p: float(reducers[threshold]([utility(p, c) for c in cs]))
                for p, cs in groups.items()}
    return {p: float(threshold) for p in groups}


def logistic_thumbs(
    samples: Samples, scorer: Scorer, *, objective: str | None = None,
    weights: Mapping[str, float] | None = None, threshold: Threshold = "prompt_mean",
    temperature: float = 0.1, seed: Seed = 0, tag: str | None = None,
) -> list[LabeledRecord]:
    """Thumbs up/down for every sample: P(up) = sigma((u(x, y) - c(x)) / temperature).

    ``threshold`` gives c(x): a number, a callable of the prompt, ``"prompt_mean"`` or
    ``"prompt_median"`` (of that prompt's sample utilities; balanced labels). With
    ``temperature=0`` the label is ``u > c(x)``.
    """
    _check_temperature(temperature)
    rng, utility = _rng(seed), make_utility(scorer, objective, weights)
    label = tag if tag is not None else objective
    groups = group_by_prompt(samples)
    cut = _thresholds(groups, utility, threshold)
    records: list[LabeledRecord] = []
    for prompt, completions in groups.items():
        for completion in completions:
            diff = np.array(utility(prompt, completion) - cut[prompt])
            if temperature == 0:
                up = bool(diff > 0)
            else:
                up = bool(rng.random() < float(_sigmoid(diff / temperature)))
            records.append(LabeledRecord(prompt=prompt, completion=completion, label=up,
                                         objective=label,
                                         source=f"annotator:thumbs[{len(records)}]"))
    return records


def _ranked(samples: Samples, scorer: Scorer, objective: str | None,
            weights: Mapping[str, float] | None, k: int, best: bool, rng: np.random.Generator,
            ) -> list[tuple[str, str]]:
    if k < 1:
        raise ValueError(f"annotator: k={k}; expected >= 1")
    utility = make_utility(scorer, objective, weights)
    picked = []
    for prompt, completions in group_by_prompt(samples).items():
        u = np.array([utility(prompt, c) for c in completions])
        tie_break = rng.random(len(completions))
        order = np.lexsort((tie_break, -u if best else u))  # last key sorts first
        picked.extend((prompt, completions[i]) for i in order[:k])
    return picked


def _one_sided(samples: Samples, scorer: Scorer, *, want: bool, objective: str | None,
               weights: Mapping[str, float] | None, k: int | None, threshold: Threshold,
               temperature: float, seed: Seed, tag: str | None) -> list[LabeledRecord]:
    rng = _rng(seed)
    label = tag if tag is not None else objective
    name = "positive" if want else "negative"
    if k is not None:
        chosen = _ranked(samples, scorer, objective, weights, k, want, rng)
        return [LabeledRecord(prompt=p, completion=c, label=want, objective=label,
                              source=f"annotator:{name}[{i}]") for i, (p, c) in enumerate(chosen)]
    thumbs = logistic_thumbs(samples, scorer, objective=objective, weights=weights,
                             threshold=threshold, temperature=temperature, seed=rng, tag=tag)
    kept = [r for r in thumbs if r.label == want]
    return [replace(r, source=f"annotator:{name}[{i}]") for i, r in enumerate(kept)]


def positive_only(
    samples: Samples, scorer: Scorer, *, objective: str | None = None,
    weights: Mapping[str, float] | None = None, top_k: int | None = None,
    threshold: Threshold = "prompt_mean", temperature: float = 0.1, seed: Seed = 0,
    tag: str | None = None,
) -> list[LabeledRecord]:
    """Thumbs-up records only: the ``top_k`` completions of each prompt by utility (ties
    broken at random), or, with ``top_k=None``, the ups of :func:`logistic_thumbs`."""
    return _one_sided(samples, scorer, want=True, objective=objective, weights=weights,
                      k=top_k, threshold=threshold, temperature=temperature, seed=seed, tag=tag)


def negative_only(
    samples: Samples, scorer: Scorer, *, objective: str | None = None,
    weights: Mapping[str, float] | None = None, bottom_k: int | None = None,
    threshold: Threshold = "prompt_mean", temperature: float = 0.1, seed: Seed = 0,
    tag: str | None = None,
) -> list[LabeledRecord]:
    """Thumbs-down records only: the ``bottom_k`` completions of each prompt, or, with
    ``bottom_k=None``, the downs of :func:`logistic_thumbs`."""
    return _one_sided(samples, scorer, want=False, objective=objective, weights=weights,
                      k=bottom_k, threshold=threshold, temperature=temperature, seed=seed,
                      tag=tag)


def scored(
    samples: Samples, scorer: Scorer, *, objectives: Sequence[str] | None = None,
    noise_std: float = 0.0, seed: Seed = 0,
) -> list[ScoredRecord]:
    """Every sample with its scores (all the scorer's objectives, or ``objectives``), plus
    independent N(0, noise_std^2) noise per score when ``noise_std > 0``."""
    if noise_std < 0:
        raise ValueError(f"scored: noise_std={noise_std}; expected >= 0")
    rng = _rng(seed)
    records: list[ScoredRecord] = []
    for prompt, completion in samples:
        scores = dict(scorer(prompt, completion))
        names = list(objectives) if objectives is not None else list(scores)
        missing = sorted(set(names) - set(scores))
        if missing:
            raise ValueError(f"scored: objective(s) {missing} not scored; scorer gives "
                             f"{sorted(scores)}")
        noisy = {k: float(scores[k]) + (float(rng.normal(0.0, noise_std)) if noise_std else 0.0)
                 for k in names}
        records.append(ScoredRecord(prompt=prompt, completion=completion, scores=noisy,
                                    source=f"annotator:scored[{len(records)}]"))
    return records


def flip_labels(records: Sequence[Record], rate: float, seed: Seed = 0) -> list[Record]:
    """Label noise: each pair is swapped (chosen <-> rejected) and each labeled record
    flipped with probability ``rate``, independently. Changed records get fresh ids; their
    ``source`` gains a ``"+flipped"`` suffix. Scored records cannot be flipped."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"flip_labels: rate={rate}; expected in [0, 1]")
    rng = _rng(seed)
    out: list[Record] = []
    for record in records:
        flip = bool(rng.random() < rate)
        if isinstance(record, PairRecord):
            out.append(replace(record, chosen=record.rejected, rejected=record.chosen, id="",
                               source=record.source + "+flipped") if flip else record)
        elif isinstance(record, LabeledRecord):
            out.append(replace(record, label=not record.label, id="",
                               source=record.source + "+flipped") if flip else record)
        else:
            raise TypeError(f"flip_labels: cannot flip a {type(record).__name__}; "
                            "expected PairRecord or LabeledRecord")
    return out


SIMULATORS: dict[str, Callable[..., list[Any]]] = {
    "pair": bt_pairs,
    "labeled": logistic_thumbs,
    "positive": positive_only,
    "negative": negative_only,
    "scored": scored,
}


def simulate(kind: str, samples: Samples, scorer: Scorer, **options: Any) -> list[Any]:
    """Dispatch by feedback kind (``"pair"``, ``"labeled"``, ``"positive"``, ``"negative"``,
    ``"scored"``) to the matching annotator with ``options``."""
    if kind not in SIMULATORS:
        raise ValueError(f"simulate: kind={kind!r}; expected one of {sorted(SIMULATORS)}")
    return SIMULATORS[kind](samples, scorer, **options)
