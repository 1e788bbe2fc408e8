"""The default layout (TRL-style columns) and app thumbs logs.

``trl`` is :func:`feedalign.data.validation.row_to_records`: prompt/chosen/rejected pairs,
prompt/completion/label thumbs, ``messages`` rows, ``labels``/``scores`` per objective, as
strings or message lists. ``thumbs`` reads app logs: prompt (or messages) + completion (or
response/output) + a feedback column (``rating`` 1/-1, ``feedback``/``thumbs``/``vote`` with
thumbs_up/thumbs_down, up/down, 1/-1).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.formats import Context, Preset, register
from feedalign.data.marks import TRUNCATION_COLUMNS
from feedalign.data.records import Record
from feedalign.data.validation import FEEDBACK_FIELDS, parse_label, row_to_records

TRL_READS = frozenset(FEEDBACK_FIELDS) | {"id", "objective", "weight"} | TRUNCATION_COLUMNS
COMPLETION_COLUMNS = ("completion", "response", "output")
THUMB_COLUMNS = ("rating", "feedback", "thumbs", "vote", "label")


def _trl(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    return row_to_records(row, kind=ctx.kind, objectives=ctx.objectives, label_values=ctx.label_values)


register(
    Preset(
        "trl",
        TRL_READS,
        lambda row: True,
        _trl,
        summary="prompt/chosen/rejected, prompt/completion/label, messages (+label), labels/scores per objective",
    )
)


def _is_thumbs(row: Mapping[str, Any]) -> bool:
    has_text = ("prompt" in row or "messages" in row) and (
        "messages" in row or any(c in row for c in COMPLETION_COLUMNS)
    )
    return has_text and "chosen" not in row and any(c in row for c in THUMB_COLUMNS[:-1])


def _rating(value: Any, field: str, ctx: Context) -> bool:
    if ctx.label_values is not None:
        return ctx.label_values.parse(value, field)
    if field == "rating" and isinstance(value, numbers.Real) and not isinstance(value, bool) and value not in (1, -1):
        raise RowError(
            field,
            f"expected a thumbs rating 1 or -1, got {value!r}; for a rating scale read it as a score "
            "(format: trl, columns: {score: rating})",
        )
    return parse_label(value, field)


def _thumbs(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    given = [c for c in THUMB_COLUMNS if row.get(c) is not None]
    if not given:
        raise RowError("rating", f"missing: expected one of {', '.join(THUMB_COLUMNS)} with a thumbs value")
    if len(given) > 1:
        raise RowError(given[1], f"ambiguous: both '{given[0]}' and '{given[1]}' hold feedback; map one with columns:")
    canon = {k: v for k, v in row.items() if k in TRL_READS and k not in ("label", "completion")}
    if "messages" not in row:
        completions = [c for c in COMPLETION_COLUMNS if row.get(c) is not None]
        if len(completions) > 1:
            raise RowError(completions[1], f"ambiguous: both '{completions[0]}' and '{completions[1]}' hold the completion")
        canon["completion"] = row.get(completions[0]) if completions else None
    canon["label"] = _rating(row[given[0]], given[0], ctx)
    return row_to_records(canon, kind=None, objectives=ctx.objectives)


register(
    Preset(
        "thumbs",
        TRL_READS | set(COMPLETION_COLUMNS) | set(THUMB_COLUMNS),
        _is_thumbs,
        _thumbs,
        summary="prompt + completion/response/output + rating 1/-1 or feedback/thumbs/vote thumbs_up/thumbs_down",
    )
)
