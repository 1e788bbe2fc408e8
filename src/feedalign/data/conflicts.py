"""Contradictory feedback: one item labeled up and down, or a pair preferred in both orders.

Conflicts are reported, never removed (annotators disagree; cDPO, rDPO and BCE reward models
are built for label noise).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from feedalign.data.records import LabeledRecord, PairRecord, Record


@dataclass(frozen=True)
class Conflict:
    """Contradictory feedback on the same item.

    kind "label": one (prompt, completion, objective) labeled up at ``first_sources`` and down
    at ``second_sources``. kind "pair": for one (prompt, objective), ``completions[0]`` was
    preferred to ``completions[1]`` at ``first_sources`` and the reverse at ``second_sources``.
    """

    kind: str
    prompt: str
    objective: str | None
    completions: tuple[str, ...]
    first_sources: tuple[str, ...]
    second_sources: tuple[str, ...]

    @property
    def sources(self) -> tuple[str, ...]:
        return self.first_sources + self.second_sources

    def message(self) -> str:
        obj = f" (objective {self.objective!r})" if self.objective else ""
        first, second = ", ".join(self.first_sources), ", ".join(self.second_sources)
        if self.kind == "label":
            return f"conflicting labels{obj}: same completion labeled up at {first} and down at {second}"
        return f"conflicting pairs{obj}: same two completions preferred one way at {first} and the other way at {second}"


def find_conflicts(records: Iterable[Record]) -> list[Conflict]:
    """Contradictory labels or pair orders, in order of first appearance.

    Conflicts are reported, not removed: noisy annotators legitimately disagree, and losses such
    as cDPO/rDPO or a BCE reward model are built for it. Exact duplicates are not conflicts.
    """
    labels: dict[tuple, dict[bool, list[str]]] = {}
    pairs: dict[tuple, dict[bool, list[str]]] = {}
    for rec in records:
        if isinstance(rec, LabeledRecord):
            key = (rec.prompt, rec.completion, rec.objective)
            labels.setdefault(key, {True: [], False: []})[rec.label].append(rec.source or rec.id)
        elif isinstance(rec, PairRecord):
            a, b = sorted((rec.chosen, rec.rejected))
            key = (rec.prompt, a, b, rec.objective)
            pairs.setdefault(key, {True: [], False: []})[rec.chosen == a].append(rec.source or rec.id)
    out = []
    for table, kind in ((labels, "label"), (pairs, "pair")):
        for key, seen in table.items():
            if seen[True] and seen[False]:
                completions = key[1:2] if kind == "label" else key[1:3]
                out.append(
                    Conflict(kind, key[0], key[-1], tuple(completions), tuple(seen[True]), tuple(seen[False]))
                )
    return out
