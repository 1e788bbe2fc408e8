"""People as the judge of a round (``judge.kind: human``).

The round's samples become A/B items (consecutive samples of a prompt, two by two) in the
feedback database ``judge.db`` with ``round = r``; people rate them in ``feedalign serve
--db DB``. The round waits (polling every ``poll_seconds``) until ``min_answers`` of its items
have an answer, then turns the answers into feedback files through
:mod:`feedalign.data.db_source` (the same rows ``feedalign data export`` writes):

    pairs_<o>.jsonl    "A better" / "B better"
    thumbs_<o>.jsonl   thumbs and "both bad" (a thumbs-down on each completion)
    ties_<o>.jsonl     ties (kept, not trained on)

Items are stored with stable ids and sampling is seeded, so a round that stopped waiting
(``wait_seconds`` passed) is resumed by running ``feedalign iterate`` again: the same items
are found, and answers given in the meantime count.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from feedalign.loop.rounds import Loop


def round_items(samples: list[tuple[str, str]], round_: int) -> list[Any]:
    from feedalign.serve.storage import Item
    from feedalign.serve.validation import item_id

    by_prompt: dict[str, list[str]] = {}
    for prompt, completion in samples:
        if completion.strip() and completion not in by_prompt.setdefault(prompt, []):
            by_prompt[prompt].append(completion)
    items = []
    for prompt, completions in by_prompt.items():
        for a, b in zip(completions[0::2], completions[1::2]):
            items.append(Item(f"r{round_}-{item_id(prompt, [a, b])}", prompt, a, b, source=f"round {round_}",
                              round=round_))
    return items


def wait_for_answers(store: Any, items: list[Any], needed: int, config: Any) -> int:
    ids = {item.id for item in items}
    deadline = time.monotonic() + config.wait_seconds
    while True:
        answered = {r["item_id"] for r in store.rating_rows(rounds=[items[0].round])} & ids
        if len(answered) >= needed:
            return len(answered)
        if time.monotonic() >= deadline:
            raise RuntimeError(f"round {items[0].round}: {len(answered)} of {len(items)} items answered, "
                               f"{needed} needed, after {config.wait_seconds:g} s; run feedalign iterate again "
                               "to keep waiting")
        time.sleep(config.poll_seconds)


def collect_round(loop: Loop, samples: list[tuple[str, str]], raw: dict, directory: Path,
                  round_: int) -> dict[str, dict[str, Any]]:
    from feedalign.data import load_records
    from feedalign.data.db_source import rows_from_ratings
    from feedalign.serve.storage import FeedbackStore

    c = loop.config.judge
    items = round_items(samples, round_)
    if not items:
        raise RuntimeError(f"round {round_}: no two distinct non-empty samples of any prompt to compare")
    store = FeedbackStore(c.db)
    try:
        store.add_items(items)
        needed = max(1, math.ceil(c.min_answers * len(items)))
        loop.log(f"  {len(items)} items for round {round_} in {store.shown_url}; waiting for {needed} answers "
                 f"(feedalign serve --db DB --objectives {','.join(c.objectives)})")
        wait_for_answers(store, items, needed, c)
        ids = {item.id for item in items}
        ratings = [r for r in store.rating_rows(rounds=[round_], objectives=list(c.objectives)) if r["item_id"] in ids]
    finally:
        store.close()
    result = rows_from_ratings(ratings, str(c.db))
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for o in c.objectives:
        groups = {
            f"pairs_{o}": [row for _, row in result.rows if row["objective"] == o and "chosen" in row],
            f"thumbs_{o}": [row for _, row in result.rows if row["objective"] == o and "completion" in row],
            f"ties_{o}": [row for row in result.ties if row["objective"] == o],
        }
        for name, rows in groups.items():
            path = directory / f"{name}.jsonl"
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps({**row, "raw_prompt": raw.get(row["prompt"], row["prompt"])},
                                            ensure_ascii=False) + "\n")
            os.replace(tmp, path)
            n = len(load_records(path).records) if rows and not name.startswith("ties_") else len(rows)
            files[name] = {"path": str(path), "records": n}
    return files
