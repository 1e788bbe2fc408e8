"""Feedback record types.

Every record carries a stable ``id`` and an optional ``objective`` name (``None`` means the
single, unnamed objective). ``source`` says where the record came from (``file:line`` or
``dataset[row]``) so any later error can point back at the input.

Kinds of feedback:
  * ``PairRecord``     - prompt, chosen, rejected ("chosen is better than rejected").
  * ``LabeledRecord``  - prompt, completion, label (True = thumbs up / desirable).
    A set holding only True labels is positive-only, only False labels negative-only.
  * ``ScoredRecord``   - prompt, completion, a score per objective.

``weight`` (default 1) multiplies the record's loss (importance weights, annotator
confidence); it is not part of the id. A ``PairRecord`` with ``tie=True`` says the two
completions were judged equally good (an arena tie, equal scores): it is kept only when ties
are asked for, and only tie-aware losses use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum


class FeedbackKind(str, Enum):
    PAIR = "pair"
    LABELED = "labeled"  # both thumbs up and down
    POSITIVE = "positive"  # labeled, only thumbs up
    NEGATIVE = "negative"  # labeled, only thumbs down
    SCORED = "scored"


def stable_id(*parts: object) -> str:
    """A content hash: the same record always gets the same id."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class PairRecord:
    prompt: str
    chosen: str
    rejected: str
    objective: str | None = None
    id: str = ""
    source: str = ""
    weight: float = 1.0
    tie: bool = False
    # A completion cut off (e.g. at a sampling length limit): it gets no EOS when tokenised.
    chosen_truncated: bool = False
    rejected_truncated: bool = False

    def __post_init__(self) -> None:
        if not self.id:
            parts = ("pair", self.prompt, self.chosen, self.rejected, self.objective)
            object.__setattr__(self, "id", stable_id(*parts, "tie") if self.tie else stable_id(*parts))

    @property
    def kind(self) -> FeedbackKind:
        return FeedbackKind.PAIR


@dataclass(frozen=True)
class LabeledRecord:
    prompt: str
    completion: str
    label: bool
    objective: str | None = None
    id: str = ""
    source: str = ""
    weight: float = 1.0
    truncated: bool = False  # the completion was cut off: no EOS when tokenised

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(
                self,
                "id",
                stable_id("labeled", self.prompt, self.completion, self.label, self.objective),
            )

    @property
    def kind(self) -> FeedbackKind:
        return FeedbackKind.POSITIVE if self.label else FeedbackKind.NEGATIVE


@dataclass(frozen=True)
class ScoredRecord:
    prompt: str
    completion: str
    scores: Mapping[str, float] = field(default_factory=dict)
    id: str = ""
    source: str = ""
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", dict(self.scores))
        if not self.id:
            object.__setattr__(
                self,
                "id",
                stable_id("scored", self.prompt, self.completion, sorted(self.scores.items())),
            )

    @property
    def kind(self) -> FeedbackKind:
        return FeedbackKind.SCORED

    @property
    def objective(self) -> str | None:
        return None


Record = PairRecord | LabeledRecord | ScoredRecord


def set_kind(records: Iterable[Record]) -> FeedbackKind | None:
    """The feedback kind of a homogeneous set: labeled sets collapse to positive/negative-only
    when they hold one class. Returns None for an empty or mixed (pairs + labels) set."""
    kinds = {r.kind for r in records}
    if not kinds:
        return None
    if kinds <= {FeedbackKind.POSITIVE, FeedbackKind.NEGATIVE}:
        return kinds.pop() if len(kinds) == 1 else FeedbackKind.LABELED
    return kinds.pop() if len(kinds) == 1 else None
