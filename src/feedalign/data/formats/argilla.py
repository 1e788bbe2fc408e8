"""Argilla 2.x exports (``Dataset.to_hub`` / ``to_datasets`` / ``to_json``).

A record is flattened to one row: each field is a column (``prompt``, ``response1``, ...),
and each question ``q`` gives ``q.responses`` (one value per annotator),
``q.responses.users`` and ``q.responses.status``; suggestions (``q.suggestion``...) and
metadata are further columns. Only submitted responses count (a missing status list counts
every response); each annotator's response becomes feedback of objective ``q``:

* a label naming a field (``response1``) -> that field is chosen over each other field;
* a ranking (``[{"value": "response2", "rank": 1}, ...]`` or a list of field names, best first)
  -> a pair for every two fields with different ranks (equal ranks are ties);
* a number (a rating question on one response field) -> a score of that response.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.formats import Context, Preset, register
from feedalign.data.messages import describe_value
from feedalign.data.records import PairRecord, Record, ScoredRecord
from feedalign.data.validation import check_text

PROMPT_FIELDS = ("prompt", "instruction", "question", "input", "query")
_NOT_FIELDS = frozenset({"id", "status", "_server_id", "inserted_at", "updated_at"})
TIES = frozenset({"tie", "equal", "both", "same"})


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]", "", str(name).lower())


def _questions(row: Mapping[str, Any]) -> list[str]:
    return [c[: -len(".responses")] for c in row if c.endswith(".responses")]


def _feedback_questions(row: Mapping[str, Any]) -> list[str]:
    """Questions whose responses are feedback (labels naming a field, rankings, ratings); free
    text answers (a comment question) are not, and their columns are listed as ignored."""
    texts = {_norm(c) for c, v in row.items() if "." not in c and isinstance(v, str)}
    out = []
    for q in _questions(row):
        values = [v for v in (row.get(f"{q}.responses") or []) if v is not None]
        text = [v for v in values if isinstance(v, str)]
        if all(_norm(v) in texts or _norm(v) in TIES for v in text):
            out.append(q)
    return out


_RESPONSE_NAME = re.compile(r"^(response|completion|answer|output|generation|reply|candidate)", re.I)


def _referenced(row: Mapping[str, Any]) -> set[str]:
    """Normalised names that label or ranking responses point at."""
    names: set[str] = set()
    for q in _questions(row):
        for value in row.get(f"{q}.responses") or []:
            items = value if isinstance(value, list) else [value]
            for item in items:
                item = item.get("value") if isinstance(item, Mapping) else item
                if isinstance(item, str):
                    names.add(_norm(item))
    return names


def _text_fields(row: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """The prompt field and the response fields (named like responses or named by a response;
    other text columns are metadata)."""
    texts = [c for c, v in row.items() if "." not in c and c not in _NOT_FIELDS and isinstance(v, str)]
    prompt_field = next((f for f in PROMPT_FIELDS if f in texts), None)
    rest = [c for c in texts if c != prompt_field]
    referenced = _referenced(row)
    responses = [c for c in rest if _RESPONSE_NAME.match(c) or _norm(c) in referenced]
    return prompt_field, responses or rest


def _fields(row: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    prompt_field, responses = _text_fields(row)
    if prompt_field is None:
        expected = ", ".join(PROMPT_FIELDS)
        raise RowError("prompt", f"missing: expected a prompt field ({expected}); map it with columns: {{prompt: ...}}")
    return check_text(row[prompt_field], prompt_field), {name: check_text(row[name], name) for name in responses}


def _field(value: Any, fields: dict[str, str], where: str) -> str:
    by_norm = {_norm(name): name for name in fields}
    name = by_norm.get(_norm(value)) if isinstance(value, str) else None
    if name is None:
        raise RowError(where, f"expected the name of a response field ({', '.join(fields)}), got {value!r}")
    return name


def _ranks(value: list, fields: dict[str, str], where: str) -> dict[str, float]:
    out = {}
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            name, rank = _field(item.get("value"), fields, where), item.get("rank")
            if not isinstance(rank, numbers.Real) or isinstance(rank, bool):
                raise RowError(where, f"item {i}: expected a numeric 'rank', got {describe_value(rank)}")
        else:
            name, rank = _field(item, fields, where), i + 1
        out[name] = float(rank)
    return out


def _response(q: str, value: Any, prompt: str, fields: dict[str, str], where: str) -> list[Record]:
    if isinstance(value, str):
        if _norm(value) in TIES and len(fields) == 2:
            a, b = fields.values()
            return [PairRecord(prompt, a, b, q, tie=True)]
        best = _field(value, fields, where)
        return [PairRecord(prompt, fields[best], text, q) for name, text in fields.items() if name != best]
    if isinstance(value, list):
        ranks = _ranks(value, fields, where)
        names = list(ranks)
        out: list[Record] = []
        for i, x in enumerate(names):
            for y in names[i + 1 :]:
                if ranks[x] == ranks[y]:
                    out.append(PairRecord(prompt, fields[x], fields[y], q, tie=True))
                else:
                    hi, lo = (x, y) if ranks[x] < ranks[y] else (y, x)
                    out.append(PairRecord(prompt, fields[hi], fields[lo], q))
        return out
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if len(fields) != 1:
            raise RowError(where, f"a rating needs exactly one response field, found {', '.join(fields)}")
        (text,) = fields.values()
        return [ScoredRecord(prompt, text, {q: float(value)})]
    raise RowError(where, f"expected a label, a ranking or a rating, got {describe_value(value)}")


def _argilla(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    prompt, fields = _fields(row)
    if not fields:
        raise RowError(None, "no response fields besides the prompt")
    out: list[Record] = []
    for q in _feedback_questions(row):
        if ctx.objectives is not None and q not in ctx.objectives:
            continue
        values = row.get(f"{q}.responses") or []
        statuses = row.get(f"{q}.responses.status") or ["submitted"] * len(values)
        for k, (value, status) in enumerate(zip(values, statuses)):
            if value is None or status != "submitted":
                ctx.unrated += 1
                continue
            out.extend(_response(q, value, prompt, fields, f"{q}.responses[{k}]"))
    return out


def _reads(row: Mapping[str, Any]) -> frozenset[str]:
    prompt_field, responses = _text_fields(row)
    names = set(responses) | ({prompt_field} if prompt_field else set())
    for q in _feedback_questions(row):
        names |= {f"{q}.responses", f"{q}.responses.status", f"{q}.responses.users"}
    return frozenset(names)


register(
    Preset(
        "argilla",
        frozenset({"id", "status", "_server_id"}),
        lambda row: any(str(c).endswith(".responses") for c in row),
        _argilla,
        summary="Argilla 2.x export: <question>.responses per annotator (label, ranking or rating)",
        extra_reads=_reads,
        groups_scores=True,
        explicit_ids=False,
    )
)
