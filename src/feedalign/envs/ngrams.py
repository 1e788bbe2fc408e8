"""The N-grams task of Multi-Objective GFlowNets (Jain et al. 2023), with its exact front.

A candidate is a sequence over the 20-letter protein-residue alphabet whose length lies in
``[min_length, max_length]``. Objective ``i`` counts the overlapping occurrences of n-gram
``g_i`` (``#{t : seq[t : t + len(g_i)] == g_i}``) and divides by a fixed normaliser:

  * bigram variants (length 32-36, normaliser 18 = 36 / 2): 2 objectives (AV, VC),
    3 objectives (AV, VC, CA), 4 objectives (AV, VC, CA, AB);
  * unigram variants (length 16-18, normaliser 18 = the maximum length): the first K of
    the unigrams A, V, C, W.

The objectives compete for positions (every letter serves at most two bigrams), so the
attainable objective vectors form a non-trivial Pareto front. Because they are counts, the
front is computed exactly (:meth:`NGramTask.exact_front`) by dynamic programming over
sequence prefixes: the increments an appended letter can still add depend only on the last
``max n-gram length - 1`` letters, and all letters that occur in no n-gram act alike, so
the state is (suffix over the relevant letters plus one stand-in letter, count vector). Of two
prefixes with the same suffix and counts ``c <= c'`` the first can never lead to a better
sequence, so each suffix keeps only its nondominated count vectors (docs/ALGORITHMS.md §18).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PROTEIN_ALPHABET", "BIGRAMS", "UNIGRAMS", "NGramTask", "ngram_task", "edit_distance", "diversity",
           "tilted_samples"]

PROTEIN_ALPHABET = "ARNDCQEGHILKMFPSTWYV"
BIGRAMS = ("AV", "VC", "CA", "AB")
UNIGRAMS = ("A", "V", "C", "W")


@dataclass(frozen=True)
class NGramTask:
    """Sequences over ``alphabet`` of length ``min_length..max_length``; objective ``i`` is
    the overlapping count of ``ngrams[i]`` divided by ``normalizer``.

    An n-gram with a letter outside ``alphabet`` never occurs (objective 0 for every valid
    sequence); :func:`ngram_task` adds ``B`` to the alphabet of the 4-objective variant for
    that reason.
    """

    ngrams: tuple[str, ...]
    min_length: int
    max_length: int
    normalizer: float
    alphabet: str = PROTEIN_ALPHABET

    def __post_init__(self) -> None:
        object.__setattr__(self, "ngrams", tuple(self.ngrams))
        if not self.ngrams or any(not g for g in self.ngrams) or len(set(self.ngrams)) != len(self.ngrams):
            raise ValueError(f"NGramTask: ngrams must be distinct non-empty strings, got {self.ngrams}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"NGramTask: need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.normalizer <= 0:
            raise ValueError(f"NGramTask: normalizer must be > 0, got {self.normalizer}")
        if len(set(self.alphabet)) != len(self.alphabet) or not self.alphabet:
            raise ValueError(f"NGramTask: alphabet must be distinct letters, got {self.alphabet!r}")

    @property
    def objectives(self) -> list[str]:
        return list(self.ngrams)

    @property
    def m(self) -> int:
        return len(self.ngrams)

    # ------------------------------------------------------------------ scoring
    def invalid_reason(self, seq: str) -> str | None:
        """Why ``seq`` is not a valid candidate, or None."""
        if not self.min_length <= len(seq) <= self.max_length:
            return f"length {len(seq)} outside [{self.min_length}, {self.max_length}]"
        bad = sorted(set(seq) - set(self.alphabet))
        return f"letters {bad} not in the alphabet" if bad else None

    def counts(self, seq: str) -> np.ndarray:
        """Overlapping occurrence counts ``[m]`` (int) of every n-gram in ``seq``."""
        return np.array([sum(seq.startswith(g, t) for t in range(len(seq) - len(g) + 1)) for g in self.ngrams],
                        dtype=np.int64)

    def score(self, seq: str) -> np.ndarray:
        """Objective vector ``[m]``; raises on an invalid sequence (see :meth:`score_many`)."""
        reason = self.invalid_reason(seq)
        if reason is not None:
            raise ValueError(f"NGramTask.score: {seq!r}: {reason}")
        return self.counts(seq) / self.normalizer

    def score_many(self, seqs: Sequence[str], *, invalid: float | None = 0.0) -> np.ndarray:
        """Objective vectors ``[N, m]``. An invalid sequence (wrong length or letters, e.g. a
        sample cut at the maximum length) scores ``invalid`` in every objective; with
        ``invalid=None`` it raises."""
        out = np.zeros((len(seqs), self.m))
        for i, seq in enumerate(seqs):
            if self.invalid_reason(seq) is None:
                out[i] = self.counts(seq) / self.normalizer
            elif invalid is None:
                raise ValueError(f"NGramTask.score_many: sequence {i} {seq!r}: {self.invalid_reason(seq)}")
            else:
                out[i] = invalid
        return out

    # ------------------------------------------------------------------ exact front
    def _letters(self) -> str:
        """The letters the DP branches on: those of the n-grams that are in the alphabet, plus
        one stand-in for all the others (the first alphabet letter in no n-gram)."""
        used = [c for c in self.alphabet if any(c in g for g in self.ngrams)]
        rest = [c for c in self.alphabet if c not in used]
        return "".join(used + rest[:1])

    def exact_front(self, *, with_sequences: bool = False) -> np.ndarray | tuple[np.ndarray, list[str]]:
        """The exact Pareto front ``[P, m]`` (normalised objectives, nondominated, sorted), and
        with ``with_sequences`` one witness sequence per point (``score(seq) == point``)."""
        counts, seqs = exact_front_counts(self)
        front = counts / self.normalizer
        return (front, seqs) if with_sequences else front

    def exact_hypervolume(self, ref: Sequence[float] | None = None) -> float:
        """Hypervolume of :meth:`exact_front` w.r.t. ``ref`` (default the origin)."""
        from feedalign.evaluation.pareto import hypervolume

        return hypervolume(self.exact_front(), np.zeros(self.m) if ref is None else ref)


def _keep_nondominated(entries: dict[tuple[int, ...], str]) -> dict[tuple[int, ...], str]:
    """Drop count vectors weakly dominated by another one (ties keep the first witness)."""
    keys = sorted(entries, key=lambda c: (-sum(c), c))
    kept: list[tuple[int, ...]] = []
    for c in keys:
        if not any(all(a >= b for a, b in zip(k, c)) for k in kept):
            kept.append(c)
    return {c: entries[c] for c in kept}


def exact_front_counts(task: NGramTask) -> tuple[np.ndarray, list[str]]:
    """DP over prefixes (module docstring): nondominated count vectors ``[P, m]`` over all
    valid lengths, sorted lexicographically, and one witness sequence each."""
    letters = task._letters()
    keep = max(len(g) for g in task.ngrams) - 1  # suffix length that determines the future
    # state: suffix -> {counts: witness}
    states: dict[str, dict[tuple[int, ...], str]] = {"": {(0,) * task.m: ""}}
    finals: dict[tuple[int, ...], str] = {}
    for length in range(1, task.max_length + 1):
        nxt: dict[str, dict[tuple[int, ...], str]] = {}
        for suffix, entries in states.items():
            for c in letters:
                window = suffix + c
                gain = tuple(int(window.endswith(g)) for g in task.ngrams)
                new_suffix = window[len(window) - keep:] if keep else ""
                bucket = nxt.setdefault(new_suffix, {})
                for counts, seq in entries.items():
                    key = tuple(a + b for a, b in zip(counts, gain))
                    bucket.setdefault(key, seq + c)
        states = {s: _keep_nondominated(e) for s, e in nxt.items()}
        if length >= task.min_length:
            for entries in states.values():
                for key, seq in entries.items():
                    finals.setdefault(key, seq)
    front = _keep_nondominated(finals)
    keys = sorted(front)
    return np.array(keys, dtype=np.float64).reshape(-1, task.m), [front[k] for k in keys]


def ngram_task(n_objectives: int, kind: str = "bigram") -> NGramTask:
    """The paper's variants: ``kind="bigram"`` with 2, 3 or 4 objectives (length 32-36,
    normaliser 18), ``kind="unigram"`` with 1-4 objectives (length 16-18, normaliser 18)."""
    if kind == "bigram":
        if n_objectives not in (2, 3, 4):
            raise ValueError(f"ngram_task: the bigram variants have 2, 3 or 4 objectives, got {n_objectives}")
        grams = BIGRAMS[:n_objectives]
        # "B" is no residue letter: with the 20 letters the fourth objective (AB) would be 0 for
        # every sequence, so the 4-objective variant samples from 21 letters (see ALGORITHMS.md §18).
        alphabet = PROTEIN_ALPHABET + "".join(sorted({c for g in grams for c in g} - set(PROTEIN_ALPHABET)))
        return NGramTask(grams, 32, 36, 18.0, alphabet)
    if kind == "unigram":
        if not 1 <= n_objectives <= 4:
            raise ValueError(f"ngram_task: the unigram variants have 1-4 objectives, got {n_objectives}")
        return NGramTask(UNIGRAMS[:n_objectives], 16, 18, 18.0)
    raise ValueError(f"ngram_task: kind={kind!r}; expected 'bigram' or 'unigram'")


def _tilts(task: NGramTask, lam: float, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-letter ``exp(lam * w . unigram gains)`` [n] and per-transition bigram tilts [n, n]."""
    if max(len(g) for g in task.ngrams) > 2:
        raise ValueError("tilted_samples: n-grams of length <= 2 only")
    letters = task.alphabet
    uni = np.array([[float(g == c) for g in task.ngrams] for c in letters])
    bi = np.array([[[float(g == a + c) for g in task.ngrams] for c in letters] for a in letters])
    return np.exp(lam * uni @ w), np.exp(lam * bi @ w)


def tilted_samples(task: NGramTask, letter_probs: Sequence[float], lam: float, w: Sequence[float], n: int, *,
                   temperature: float = 1.0, seed: int = 0) -> list[str]:
    """``n`` exact samples of ``pi(y) ∝ p(y) * exp(lam * w . counts(y))`` for the prior ``p``
    that draws a length uniformly in the valid range and then each letter independently with
    ``letter_probs`` (over ``task.alphabet``); n-grams of length <= 2.

    The tilt factorises over transitions, so ``pi`` is a Markov chain given the length: with
    backward messages ``b_r(a) = sum_c p(c) t1(c) t2(a, c) b_{r-1}(c)`` (``b_0 = 1``, ``t1``/``t2``
    the unigram/bigram tilts) the length is drawn ``∝ Z_L = sum_c p(c) t1(c) b_{L-1}(c)`` and
    letter ``i`` given the previous one ``∝ p(c) t1(c) t2(a, c) b_{L-1-i}(c)``. With
    ``temperature != 1`` each letter's conditional is raised to ``1 / temperature`` and
    renormalised, as a language model is sampled (the length stays drawn from ``Z_L``)."""
    p = np.asarray(letter_probs, dtype=np.float64)
    if p.shape != (len(task.alphabet),) or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"tilted_samples: letter_probs must be {len(task.alphabet)} probabilities summing to 1")
    t1, t2 = _tilts(task, lam, np.asarray(w, dtype=np.float64))
    step = t2 * (p * t1)[None, :]  # [a, c]: p(c) t1(c) t2(a, c)
    msgs, logscale = [np.ones(len(p))], [0.0]  # b_r normalised to max 1, with its log scale
    for _ in range(task.max_length):
        b = step @ msgs[-1]
        msgs.append(b / b.max())
        logscale.append(logscale[-1] + float(np.log(b.max())))
    lengths = np.arange(task.min_length, task.max_length + 1)
    log_z = np.array([np.log(p * t1 @ msgs[L - 1]) + logscale[L - 1] for L in lengths])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.choice(lengths, p=np.exp(log_z - log_z.max()) / np.exp(log_z - log_z.max()).sum()))
        q, seq = p * t1 * msgs[length - 1], []
        for r in range(length - 1, -1, -1):
            q = q ** (1.0 / temperature)
            seq.append(int(rng.choice(len(p), p=q / q.sum())))
            if r:
                q = step[seq[-1]] * msgs[r - 1]
        out.append("".join(task.alphabet[i] for i in seq))
    return out


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit costs)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def diversity(seqs: Sequence[str], *, max_pairs: int = 2000, seed: int = 0) -> dict[str, float]:
    """``distinct`` (share of distinct sequences) and ``mean_edit_distance`` over pairs of
    samples (all pairs, or ``max_pairs`` seeded random pairs when there are more)."""
    n = len(seqs)
    if n == 0:
        return {"distinct": 0.0, "mean_edit_distance": 0.0, "n": 0}
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[k] for k in rng.choice(len(pairs), size=max_pairs, replace=False)]
    dist = float(np.mean([edit_distance(seqs[i], seqs[j]) for i, j in pairs])) if pairs else 0.0
    return {"distinct": len(set(seqs)) / n, "mean_edit_distance": dist, "n": n}
