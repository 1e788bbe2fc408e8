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
    the others), then matched in order; each record is used at most once. A down record whose
    completion equals the up record's text is skipped in favour of the next one (such a pair
    would be chosen == rejected). Unmatched records are left out.

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
                )
            )
    return pairs


def _match(ups: list[LabeledRecord], downs: list[LabeledRecord], limit: int | None):
    """Greedy in-order matching, skipping downs with the same text as the up record."""
    used = [False] * len(downs)
    start = 0  # every down before `start` is used
    count = 0
    for up in ups:
        if limit is not None and count >= limit:
            return
        while start < len(downs) and used[start]:
            start += 1
        for j in range(start, len(downs)):
            if not used[j] and downs[j].completion != up.completion:
                used[j] = True
                count += 1
                yield up, downs[j]
                break
