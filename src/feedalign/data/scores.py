"""Scores and rankings become feedback: pairs per objective, or thumbs by threshold.

The scored completions of one prompt (in one source) form a group. Per objective, with the
completions that have a score for it:

* ``to: pairs`` (default), ``pairs: all``: every two completions with different scores give a
  pair (higher score chosen); ``pairs: best_vs_worst``: one pair, the highest against the
  lowest. A pair whose gap is below ``min_gap`` is skipped (counted); equal scores are a tie
  (counted; kept as a tie record only when ties are kept). Two identical completion texts are
  never paired.
* ``to: labels``: a thumb per completion, up when ``score >= threshold`` (a number, or one per
  objective).
* ``to: scores``: keep the scored records as they are.

Ratings that were not given ("N/A") never reach this point: the presets skip and count them.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedalign.data.records import LabeledRecord, PairRecord, Record, ScoredRecord

SCORE_KEY = "score"  # a bare ``score`` column: the single, unnamed objective (None)


def _name(objective: str) -> str | None:
    return None if objective == SCORE_KEY else objective

TARGETS = ("pairs", "labels", "scores")
PAIRINGS = ("all", "best_vs_worst")


@dataclass(frozen=True)
class ScorePolicy:
    """How scored records become feedback (see the module docstring)."""

    to: str = "pairs"
    pairs: str = "all"
    min_gap: float = 0.0
    threshold: float | Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.to not in TARGETS:
            raise ValueError(f"scores.to must be one of {', '.join(TARGETS)}, got {self.to!r}")
        if self.pairs not in PAIRINGS:
            raise ValueError(f"scores.pairs must be one of {', '.join(PAIRINGS)}, got {self.pairs!r}")
        if not isinstance(self.min_gap, numbers.Real) or self.min_gap < 0:
            raise ValueError(f"scores.min_gap must be a number >= 0, got {self.min_gap!r}")
        if self.to == "labels" and self.threshold is None:
            raise ValueError("scores.to: labels needs scores.threshold (a number or {objective: number})")

    @classmethod
    def from_config(cls, value: Any) -> ScorePolicy | None:
        if value is None or isinstance(value, ScorePolicy):
            return value
        if isinstance(value, str):
            return cls(to=value)
        if not isinstance(value, Mapping):
            expected = "pairs/labels/scores or a mapping {to, pairs, min_gap, threshold}"
            raise ValueError(f"scores must be {expected}, got {value!r}")
        unknown = sorted(set(value) - {"to", "pairs", "min_gap", "threshold"})
        if unknown:
            raise ValueError(f"scores: unknown keys {unknown}; expected to, pairs, min_gap, threshold")
        return cls(**dict(value))

    def threshold_for(self, objective: str) -> float | None:
        if isinstance(self.threshold, Mapping):
            return self.threshold.get(objective)
        return self.threshold


@dataclass
class ScoreStats:
    """What the conversion did: ties (equal scores), pairs under ``min_gap``, completions that
    had no other completion of their prompt to be compared with."""

    ties: int = 0
    below_gap: int = 0
    alone: int = 0
    tie_rows: set[str] = field(default_factory=set)


def scores_to_feedback(records: Sequence[Record], policy: ScorePolicy) -> tuple[list[Record], list[PairRecord], ScoreStats]:
    """``(records, ties, stats)``: scored records replaced per ``policy``, other records kept in
    place; ``ties`` holds the tie records (equal scores) for callers that keep ties."""
    stats = ScoreStats()
    if policy.to == "scores":
        return list(records), [], stats
    out: list[Record] = [r for r in records if not isinstance(r, ScoredRecord)]
    ties: list[PairRecord] = []
    groups: dict[str, list[ScoredRecord]] = {}
    for rec in records:
        if isinstance(rec, ScoredRecord):
            groups.setdefault(rec.prompt, []).append(rec)
    for group in groups.values():
        if policy.to == "labels":
            out.extend(_labels(group, policy))
            continue
        pairs, group_ties = _pairs(group, policy, stats)
        out.extend(pairs)
        ties.extend(group_ties)
    return out, ties, stats


def _labels(group: Iterable[ScoredRecord], policy: ScorePolicy) -> list[LabeledRecord]:
    out = []
    for rec in group:
        for objective, score in rec.scores.items():
            threshold = policy.threshold_for(objective)
            if threshold is not None:
                label = score >= threshold
                out.append(
                    LabeledRecord(rec.prompt, rec.completion, label, _name(objective), source=rec.source, weight=rec.weight)
                )
    return out


def _objectives(group: Sequence[ScoredRecord]) -> list[str]:
    return list(dict.fromkeys(name for rec in group for name in rec.scores))


def _pairs(group: Sequence[ScoredRecord], policy: ScorePolicy, stats: ScoreStats) -> tuple[list[PairRecord], list[PairRecord]]:
    pairs: list[PairRecord] = []
    ties: list[PairRecord] = []
    for objective in _objectives(group):
        scored = [r for r in group if objective in r.scores]
        if len({r.completion for r in scored}) < 2:
            stats.alone += len(scored)
            continue
        if policy.pairs == "best_vs_worst":
            best = max(scored, key=lambda r: r.scores[objective])
            worst = min(scored, key=lambda r: r.scores[objective])
            candidates = [(best, worst)] if best.completion != worst.completion else []
            if best.scores[objective] == worst.scores[objective]:
                candidates = [(scored[0], next(r for r in scored if r.completion != scored[0].completion))]
        else:
            candidates = [(a, b) for i, a in enumerate(scored) for b in scored[i + 1 :] if a.completion != b.completion]
        for a, b in candidates:
            gap = a.scores[objective] - b.scores[objective]
            hi, lo = (a, b) if gap >= 0 else (b, a)
            weight = (a.weight * b.weight) ** 0.5
            if gap == 0:
                stats.ties += 1
                stats.tie_rows.update({a.source, b.source})
                ties.append(
                    PairRecord(a.prompt, a.completion, b.completion, _name(objective), source=a.source, weight=weight, tie=True)
                )
            elif abs(gap) < policy.min_gap:
                stats.below_gap += 1
            else:
                pairs.append(
                    PairRecord(hi.prompt, hi.completion, lo.completion, _name(objective), source=hi.source, weight=weight)
                )
    return pairs, ties
