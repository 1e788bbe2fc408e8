"""Scored completions: openbmb UltraFeedback (raw) and nvidia HelpSteer2.

Both give scores per objective; the completions of one prompt become pairs per objective by
default (see :mod:`feedalign.data.scores`).

UltraFeedback: ``instruction`` + ``completions`` [{``response``, ``annotations``: {aspect:
{``Rating``, ...}}}]; ratings are strings ("1".."5") and "N/A" means not rated (skipped and
counted). Objectives: helpfulness, honesty, instruction_following, truthfulness.

HelpSteer2: ``prompt``, ``response`` and five 0-4 integer attributes (the objectives);
consecutive rows share a prompt.

ranked: ``prompt`` + ``completions`` (K strings) + ``ranks`` (K numbers, 1 = best; equal ranks
tie) or ``scores`` (K numbers, higher is better), optional ``objective``: K ranked completions
become pairs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.formats import Context, Preset, register
from feedalign.data.messages import describe_value
from feedalign.data.records import Record, ScoredRecord
from feedalign.data.validation import check_id, check_objective, check_text

UF_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
HS_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
UNRATED = frozenset({"n/a", "na", "none", "null", ""})


def parse_rating(value: Any, field: str, ctx: Context) -> float | None:
    """A rating as a number; "N/A" / null -> None (counted as unrated). Never compared as text."""
    if value is None or (isinstance(value, str) and value.strip().lower() in UNRATED):
        ctx.unrated += 1
        return None
    if isinstance(value, bool):
        raise RowError(field, f"expected a numeric rating, got {value!r}")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise RowError(field, f"expected a numeric rating or 'N/A', got {value!r}") from None
    elif isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:
            raise RowError(field, "expected a numeric rating, got an integer too large for a float") from None
    else:
        raise RowError(field, f"expected a numeric rating, got {describe_value(value)}")
    if not math.isfinite(number):
        raise RowError(field, f"expected a finite rating, got {value!r}")
    return number


def _allowed(name: str, ctx: Context) -> bool:
    return ctx.objectives is None or name in ctx.objectives


def _ultrafeedback(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    prompt = check_text(row.get("instruction"), "instruction")
    completions = row.get("completions")
    if not isinstance(completions, (list, tuple)) or not completions:
        raise RowError("completions", f"expected a non-empty list of completions, got {describe_value(completions)}")
    rid = check_id(row.get("id"))
    out: list[Record] = []
    for i, item in enumerate(completions):
        where = f"completions[{i}]"
        if not isinstance(item, Mapping):
            raise RowError(where, f"expected an object with 'response' and 'annotations', got {describe_value(item)}")
        response = check_text(item.get("response"), f"{where}.response")
        annotations = item.get("annotations")
        if not isinstance(annotations, Mapping):
            detail = f"expected an object {{aspect: {{Rating}}}}, got {describe_value(annotations)}"
            raise RowError(f"{where}.annotations", detail)
        scores = {}
        for aspect, note in annotations.items():
            if not _allowed(aspect, ctx):
                continue
            rating = note.get("Rating") if isinstance(note, Mapping) else note
            value = parse_rating(rating, f"{where}.annotations.{aspect}.Rating", ctx)
            if value is not None:
                scores[aspect] = value
        if scores:
            out.append(ScoredRecord(prompt, response, scores, id=f"{rid}/{i}" if rid else ""))
    return out


def _helpsteer(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    prompt, response = check_text(row.get("prompt"), "prompt"), check_text(row.get("response"), "response")
    scores = {}
    for name in HS_ATTRIBUTES:
        if _allowed(name, ctx):
            value = parse_rating(row.get(name), name, ctx)
            if value is not None:
                scores[name] = value
    if not scores:
        return []
    return [ScoredRecord(prompt, response, scores, id=check_id(row.get("id")))]


register(
    Preset(
        "ultrafeedback",
        frozenset({"instruction", "completions", "id", "weight"}),
        lambda row: "instruction" in row and "completions" in row,
        _ultrafeedback,
        objectives=UF_ASPECTS,
        groups_scores=True,
        summary="instruction + completions with per-aspect Ratings -> pairs per aspect",
    )
)
register(
    Preset(
        "helpsteer2",
        frozenset({"prompt", "response", "id", "weight", *HS_ATTRIBUTES}),
        lambda row: {"prompt", "response", *HS_ATTRIBUTES} <= set(row),
        _helpsteer,
        objectives=HS_ATTRIBUTES,
        groups_scores=True,
        summary="prompt + response + five 0-4 attributes -> pairs per attribute among a prompt's responses",
    )
)


def _ranked(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    prompt = check_text(row.get("prompt"), "prompt")
    completions = row.get("completions")
    if not isinstance(completions, (list, tuple)) or len(completions) < 2:
        raise RowError("completions", f"expected a list of at least two completions, got {describe_value(completions)}")
    texts = [check_text(c, f"completions[{i}]") for i, c in enumerate(completions)]
    column = "ranks" if row.get("ranks") is not None else "scores"
    values = row.get(column)
    if not isinstance(values, (list, tuple)) or len(values) != len(texts):
        raise RowError(column, f"expected a list of {len(texts)} numbers (one per completion), got {describe_value(values)}")
    objective = check_objective(row.get("objective"), "objective", ctx.objectives) or "score"
    out: list[Record] = []
    for i, (text, value) in enumerate(zip(texts, values)):
        number = parse_rating(value, f"{column}[{i}]", ctx)
        if number is not None:
            out.append(ScoredRecord(prompt, text, {objective: -number if column == "ranks" else number}))
    return out


register(
    Preset(
        "ranked",
        frozenset({"prompt", "completions", "ranks", "scores", "objective", "weight"}),
        lambda row: "prompt" in row and "completions" in row and ("ranks" in row or "scores" in row),
        _ranked,
        groups_scores=True,
        summary="prompt + K completions + ranks (1 = best) or scores -> pairs",
    )
)
