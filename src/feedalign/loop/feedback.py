"""One round's feedback as ordinary feedback files, with provenance.

From the K scored samples of each prompt, for every judge objective ``o``:

    pairs_<o>.jsonl      the samples paired two by two at random, the preferred one by the
                         judge's scores (Bradley-Terry at ``temperature``; 0 = higher wins)
    thumbs_<o>.jsonl     thumbs up when the score beats the prompt's mean
    positives_<o>.jsonl  the best of the K samples (positive-only)
    negatives_<o>.jsonl  the worst of the K samples (negative-only)

    ties_<o>.jsonl       with ``temperature: 0`` only: the pairs whose two scores are equal
                         (a tie is not a preference; kept for the record, not for training)
    neutral_<o>.jsonl    with ``temperature: 0`` only: samples scoring exactly their prompt's
                         mean (e.g. all K equally good): neither up nor down, not trained on

(:mod:`feedalign.envs.annotators` does the judging from the scores.) Samples with an empty
completion are not judged (the loader rejects rows without one) and are counted as
``empty``. Every row is a canonical row (``feedalign.data.record_to_row``) plus provenance
columns the loader ignores: ``round``, ``judge``, ``time``, ``raw_prompt`` and the judge's
``judge_scores``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from feedalign.data.records import PairRecord

UNTRAINED = ("ties_", "neutral_")  # files kept for the record; their rows are no training rows


def judged_sets(samples: Sequence[tuple[str, str]], scores: Mapping[str, np.ndarray], objectives: Sequence[str], *,
                temperature: float, seed: int, tag: str) -> dict[str, list[Any]]:
    """Every feedback set (``<kind>_<objective>``) from scored samples; ids ``<tag>/<set>/<i>``."""
    from feedalign.envs import annotators as ann

    table = {(p, c): {o: float(scores[o][i]) for o in objectives} for i, (p, c) in enumerate(samples)}
    judged = [(p, c) for p, c in samples if c.strip()]

    def scorer(prompt: str, completion: str) -> dict[str, float]:
        return table[(prompt, completion)]

    seeds = np.random.SeedSequence([seed, 16]).generate_state(4 * len(objectives))
    sets: dict[str, list[Any]] = {}
    for k, o in enumerate(objectives):
        s = [int(x) for x in seeds[4 * k:4 * k + 4]]
        pairs = ann.bt_pairs(judged, scorer, objective=o, temperature=temperature, seed=s[0])
        if temperature == 0:  # "the higher score wins": equal scores are ties, not preferences
            tied = [r for r in pairs if table[(r.prompt, r.chosen)][o] == table[(r.prompt, r.rejected)][o]]
            pairs = [r for r in pairs if r not in tied]
            sets[f"ties_{o}"] = tied
        sets[f"pairs_{o}"] = pairs
        thumbs = ann.logistic_thumbs(judged, scorer, objective=o, temperature=temperature, seed=s[1])
        if temperature == 0:  # a score equal to the prompt's mean is neither up nor down
            means = {p: float(np.mean([table[(p, c)][o] for c in cs])) for p, cs in ann.group_by_prompt(judged).items()}
            sets[f"neutral_{o}"] = [r for r in thumbs if table[(r.prompt, r.completion)][o] == means[r.prompt]]
            thumbs = [r for r in thumbs if table[(r.prompt, r.completion)][o] != means[r.prompt]]
        sets[f"thumbs_{o}"] = thumbs
        sets[f"positives_{o}"] = ann.positive_only(judged, scorer, objective=o, top_k=1, seed=s[2])
        sets[f"negatives_{o}"] = ann.negative_only(judged, scorer, objective=o, bottom_k=1, seed=s[3])
    return {name: [replace(r, id=f"{tag}/{name}/{i}") for i, r in enumerate(records)]
            for name, records in sets.items()}


def provenance_row(record: Any, *, round_: int, judge: str, time: str, raw_prompts: Mapping[str, str],
                   scores: Mapping[tuple[str, str], Mapping[str, float]] | None) -> dict[str, Any]:
    from feedalign.data.loaders import record_to_row

    row = record_to_row(record)
    row.update(round=round_, judge=judge, time=time, raw_prompt=raw_prompts.get(record.prompt, record.prompt))
    if scores is not None:
        if isinstance(record, PairRecord):
            row["judge_scores"] = {"chosen": scores.get((record.prompt, record.chosen)),
                             "rejected": scores.get((record.prompt, record.rejected))}
        else:
            row["judge_scores"] = scores.get((record.prompt, record.completion))
    return row


def write_sets(sets: Mapping[str, list[Any]], directory: Path, *, round_: int, judge: str,
               raw_prompts: Mapping[str, str], scores: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
               ) -> dict[str, dict[str, Any]]:
    """Write each set to ``directory/<name>.jsonl`` (atomically), read it back through the
    validating loader, and return ``{name: {"path", "records"}}``."""
    from feedalign.data import load_records

    directory.mkdir(parents=True, exist_ok=True)
    time = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out = {}
    for name, records in sets.items():
        path = directory / f"{name}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                row = provenance_row(record, round_=round_, judge=judge, time=time, raw_prompts=raw_prompts,
                                     scores=scores)
                if name.startswith("neutral_"):
                    row.pop("label")
                if name.startswith("ties_"):
                    row["completions"] = [row.pop("chosen"), row.pop("rejected")]
                    if "judge_scores" in row:
                        row["judge_scores"] = [row["judge_scores"]["chosen"], row["judge_scores"]["rejected"]]
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        n = len(load_records(path).records) if records and not name.startswith(UNTRAINED) else len(records)
        if n != len(records):
            raise RuntimeError(f"{path}: wrote {len(records)} records but read back {n}")
        out[name] = {"path": str(path), "records": n}
    return out
