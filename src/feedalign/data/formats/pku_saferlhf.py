"""PKU-SafeRLHF: two responses to one prompt with a helpfulness and a safety verdict.

Columns read: ``prompt``, ``response_0``, ``response_1``, ``better_response_id``,
``safer_response_id``, ``is_response_0_safe``, ``is_response_1_safe``. One row gives a
``helpful`` pair (from better_response_id), a ``harmless`` pair (from safer_response_id) and
one ``harmless`` thumb per response (from is_response_k_safe). Severity levels, harm
categories and sources are listed as ignored columns.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.formats import Context, Preset, register
from feedalign.data.records import LabeledRecord, PairRecord, Record
from feedalign.data.validation import check_text, parse_label

READS = frozenset(
    {
        "prompt",
        "response_0",
        "response_1",
        "better_response_id",
        "safer_response_id",
        "is_response_0_safe",
        "is_response_1_safe",
        "weight",
    }
)


def _which(value: Any, field: str) -> int:
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value in (0, 1):
        return int(value)
    raise RowError(field, f"expected 0 or 1 (the index of the response), got {value!r}")


def _pku(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    prompt = check_text(row.get("prompt"), "prompt")
    responses = (check_text(row.get("response_0"), "response_0"), check_text(row.get("response_1"), "response_1"))
    if responses[0] == responses[1]:
        raise RowError("response_1", "identical to 'response_0'; a pair needs two different responses")
    out: list[Record] = []
    for objective, column in (("helpful", "better_response_id"), ("harmless", "safer_response_id")):
        if row.get(column) is None or (ctx.objectives is not None and objective not in ctx.objectives):
            continue
        best = _which(row[column], column)
        out.append(PairRecord(prompt, responses[best], responses[1 - best], objective))
    if ctx.objectives is None or "harmless" in ctx.objectives:
        for k in (0, 1):
            column = f"is_response_{k}_safe"
            if row.get(column) is not None:
                out.append(LabeledRecord(prompt, responses[k], parse_label(row[column], column), "harmless"))
    if not out:
        detail = "no verdict: better_response_id, safer_response_id and is_response_k_safe are all missing"
        raise RowError("better_response_id", detail)
    return out


register(
    Preset(
        "pku-saferlhf",
        READS,
        lambda row: {"response_0", "response_1"} <= set(row) and ("better_response_id" in row or "safer_response_id" in row),
        _pku,
        objectives=("helpful", "harmless"),
        summary="helpful pairs (better_response_id), harmless pairs (safer_response_id), harmless thumbs",
    )
)
