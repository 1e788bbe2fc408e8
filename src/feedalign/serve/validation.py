"""Server-side checks of what a browser sends, and of the items file the app serves.

A submission is JSON::

    {"submission_id": "3f2c...", "item_id": "...", "annotator": "alice",
     "left": "b", "values": {"helpful": "left", "concise": "tie"}, "comment": "..."}

``values`` holds, per objective, ``up``/``down`` for a single completion, or for two
completions ``left``/``right`` (as the page showed them), ``tie`` or ``both_bad``; objectives
left out were not rated, but at least one must be. ``left`` must be the side the server
assigned to this annotator and item. The positions are translated to ``a``/``b`` before
storing. Every problem is a :class:`SubmissionError` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from feedalign.serve.storage import Item, Submission

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:\-]{0,127}$")
MAX_COMMENT = 2000
FIELDS = {"submission_id", "item_id", "annotator", "left", "values", "comment"}
POSITION_VALUES = {"left": "left", "right": "right", "tie": "tie", "both_bad": "both_bad"}


class SubmissionError(ValueError):
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"field '{field}': {reason}" if field else reason)
        self.field = field
        self.reason = reason


def left_side(annotator: str, item_id: str) -> str:
    """Which completion ('a' or 'b') this annotator sees on the left: a fair coin per
    (annotator, item), stable across page loads."""
    digest = hashlib.sha256(f"{annotator}\0{item_id}".encode()).digest()
    return "a" if digest[0] % 2 == 0 else "b"


def check_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise SubmissionError(field, "expected 1-128 characters of letters, digits and _ . @ : - (starting "
                                     f"with a letter or digit), got {value!r}"[:200])
    return value


def parse_submission(body: Any, item_lookup, objectives: Sequence[str]) -> Submission:
    """Validate ``body`` (decoded JSON) against the stored item and the app's objectives."""
    if not isinstance(body, Mapping):
        raise SubmissionError(None, "expected a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise SubmissionError(unknown[0], f"unknown field; expected only {sorted(FIELDS)}")
    submission_id = check_id(body.get("submission_id"), "submission_id")
    annotator = check_id(body.get("annotator"), "annotator")
    item_id = body.get("item_id")
    item = item_lookup(item_id) if isinstance(item_id, str) else None
    if item is None:
        raise SubmissionError("item_id", f"no such item: {item_id!r}"[:200])
    values = body.get("values")
    if not isinstance(values, Mapping) or not values:
        raise SubmissionError("values", "expected an object with a rating for at least one objective")
    left = None
    if item.is_pair:
        left = body.get("left")
        if left != left_side(annotator, item.id):
            raise SubmissionError("left", f"expected the side shown on the left for this annotator, got {left!r}")
    stored = {}
    for objective, value in values.items():
        if objective not in objectives:
            raise SubmissionError(f"values.{objective}"[:140], f"unknown objective; expected one of {list(objectives)}")
        stored[objective] = _value(value, item, left, f"values.{objective}")
    comment = body.get("comment")
    if comment is not None:
        if not isinstance(comment, str):
            raise SubmissionError("comment", "expected a string")
        if len(comment) > MAX_COMMENT:
            raise SubmissionError("comment", f"longer than {MAX_COMMENT} characters")
        comment = comment.strip() or None
    return Submission(submission_id, item.id, annotator, stored, left, comment)


def _value(value: Any, item: Item, left: str | None, field: str) -> str:
    if not item.is_pair:
        if value not in ("up", "down"):
            raise SubmissionError(field, f"expected 'up' or 'down' for a single completion, got {value!r}"[:200])
        return value
    if value not in POSITION_VALUES:
        raise SubmissionError(field, f"expected 'left', 'right', 'tie' or 'both_bad', got {value!r}"[:200])
    if value == "left":
        return left
    if value == "right":
        return "b" if left == "a" else "a"
    return value


# ------------------------------------------------------------------ items files


def item_id(prompt: str, completions: Sequence[str]) -> str:
    blob = json.dumps([prompt, list(completions)], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def read_items(path: str | Path) -> list[Item]:
    """Items from JSONL: ``{"prompt", "completion"}`` (thumbs) or ``{"prompt", "completions":
    [a, b]}`` (comparison), optional ``id`` and ``round``. Errors name file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    items, seen = [], {}
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            loc = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{loc}: invalid JSON: {exc.msg} at column {exc.colno}") from None
            item = _row_item(row, loc)
            if item.id in seen:
                raise ValueError(f"{loc}: field 'id': {item.id!r} already used on line {seen[item.id]}")
            seen[item.id] = lineno
            items.append(item)
    if not items:
        raise ValueError(f"{path}: empty: no items found")
    return items


def _row_item(row: Any, loc: str) -> Item:
    if not isinstance(row, Mapping):
        raise ValueError(f"{loc}: expected a JSON object")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{loc}: field 'prompt': expected a non-empty string")
    if "completions" in row:
        completions = row["completions"]
        if not isinstance(completions, list) or len(completions) != 2:
            raise ValueError(f"{loc}: field 'completions': expected a list of two strings")
        field = "completions"
    elif "completion" in row:
        completions, field = [row["completion"]], "completion"
    else:
        raise ValueError(f"{loc}: field 'completion': missing; expected 'completion' or 'completions'")
    if any(not isinstance(c, str) or not c.strip() for c in completions):
        raise ValueError(f"{loc}: field '{field}': expected non-empty strings")
    if len(completions) == 2 and completions[0] == completions[1]:
        raise ValueError(f"{loc}: field 'completions': the two completions are identical")
    rid = row.get("id")
    if rid is not None:
        rid = _check_item_id(rid, loc)
    round_ = row.get("round")
    if round_ is not None and (not isinstance(round_, int) or isinstance(round_, bool) or round_ < 0):
        raise ValueError(f"{loc}: field 'round': expected a non-negative integer, got {round_!r}")
    return Item(rid or item_id(prompt, completions), prompt, completions[0],
                completions[1] if len(completions) == 2 else None, source=loc, round=round_)


def _check_item_id(value: Any, loc: str) -> str:
    try:
        return check_id(str(value) if isinstance(value, int) and not isinstance(value, bool) else value, "id")
    except SubmissionError as exc:
        raise ValueError(f"{loc}: {exc}") from None
