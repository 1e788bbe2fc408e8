"""Discordant pairing: turn thumbs-up/down labels into preference pairs.

Why it is sound (ALGORITHMS.md §14, [derived]). Suppose labels follow the logistic-binary model
P(u = 1 | x, y) = sigma(r(x, y) - c(x)) with an unknown per-prompt threshold c(x), and y1, y2
are two iid samples for the same prompt, labeled independently. With a = r(y1) - c and
b = r(y2) - c,

    P(u1=1, u2=0) / P(u1=0, u2=1) = sigma(a) sigma(-b) / (sigma(-a) sigma(b)) = e^(a - b),

so P(y1 preferred | exactly one up-vote) = sigma(r(y1) - r(y2)): the discordant pair is a
Bradley-Terry comparison of the true rewards and c(x) cancels. DPO on such pairs targets the
same optimum as DPO on BT pairs. Concordant pairs (both up or both down) carry no order and
are not formed. Matching a random up-labeled sample with a random down-labeled sample of the
same prompt keeps this property: the up/down labels of iid samples are exchangeable, so every
unordered pair {a, b} appears as (up=a, down=b) and (up=b, down=a) in the ratio e^(r_a - r_b).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from feedalign.data.records import LabeledRecord, PairRecord, stable_id


def discordant_pairs(
    labeled_records: Iterable[LabeledRecord], *, seed: int = 0, max_pairs_per_prompt: int | None = None
) -> list[PairRecord]:
    """Pair up-labeled with down-labeled completions of the same (prompt, objective).

    Within each (prompt, objective) group the up- and down-labeled records are shuffled with a
    generator seeded by ``seed`` and the group key (so one group's pairing does not depend on
    the others), then matched position by position; each record is used at most once. A matched pair whose
    two completions are the same text is dropped afterwards (it would be chosen == rejected;
    re-matching instead would bias the pair order). Unmatched records are left out.

    Args:
        labeled_records: LabeledRecords; any other record type is an error.
        seed: pairing seed; the same seed and input give the same pairs in the same order.
        max_pairs_per_prompt: cap on pairs per (prompt, objective) group; None = as many as
            the smaller class allows.

    Returns:
        PairRecords (chosen = up-labeled completion) in order of each group's first record;
        ``id = stable_id("discordant", up.id, down.id)``, ``source = "<up source>|<down source>"``.
    """
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise ValueError(f"max_pairs_per_prompt must be >= 1 or None, got {max_pairs_per_prompt}")
    groups: dict[tuple[str, str | None], tuple[list[LabeledRecord], list[LabeledRecord]]] = {}
    for index, rec in enumerate(labeled_records):
        if not isinstance(rec, LabeledRecord):
            raise TypeError(f"record {index}: expected a LabeledRecord, got {type(rec).__name__}")
        ups, downs = groups.setdefault((rec.prompt, rec.objective), ([], []))
        (ups if rec.label else downs).append(rec)
    pairs: list[PairRecord] = []
    for (prompt, objective), (ups, downs) in groups.items():
        if not ups or not downs:
            continue
        rng = random.Random(stable_id("discordant-seed", seed, prompt, objective))
        ups, downs = ups[:], downs[:]
        rng.shuffle(ups)
        rng.shuffle(downs)
        for up, down in _match(ups, downs, max_pairs_per_prompt):
            pairs.append(
                PairRecord(
                    prompt=prompt,
                    chosen=up.completion,
                    rejected=down.completion,
                    objective=objective,
                    id=stable_id("discordant", up.id, down.id),
                    source=f"{up.source or up.id}|{down.source or down.id}",
                    weight=(up.weight * down.weight) ** 0.5,  # geometric mean of the two rows' weights
                )
            )
    return pairs


def _match(ups: list[LabeledRecord], downs: list[LabeledRecord], limit: int | None):
    """Match the shuffled lists position by position, then drop pairs whose two texts are equal.

    Matching uniformly at random first and filtering afterwards keeps the exchangeability
    argument of the module docstring: skipping ahead to find a different text would favour
    some (up, down) combinations over others and bias the order away from Bradley-Terry.
    A same-text pair carries no preference (chosen == rejected), so dropping it loses nothing.
    """
    count = 0
    for up, down in zip(ups, downs):
        if limit is not None and count >= limit:
            return
        if down.completion == up.completion:
            continue
        count += 1
        yield up, down
