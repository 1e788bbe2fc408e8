"""Chatbot-arena battles, in both published layouts.

* lmsys/chatbot_arena_conversations: ``model_a``, ``model_b``, ``winner`` (model_a, model_b,
  tie, tie (bothbad)), ``conversation_a`` / ``conversation_b`` (message lists).
* Kaggle / lmarena: ``prompt``, ``response_a``, ``response_b`` (JSON-encoded lists of strings,
  one per turn) and 0/1 columns ``winner_model_a``, ``winner_model_b``, ``winner_tie``.

The prompt is the leading messages both conversations share (the first user turn); the
completion the rest of each. A win gives a pair; a tie gives a tie record (counted, and left
out of pair losses unless ties are kept).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.formats import Context, Preset, register
from feedalign.data.messages import check_messages, common_prefix, describe_value, split_conversation
from feedalign.data.records import PairRecord, Record
from feedalign.data.validation import check_id

WINNERS = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "tie"}
_KAGGLE = ("winner_model_a", "winner_model_b", "winner_tie")


def _winner(row: Mapping[str, Any]) -> str:
    if "winner" in row:
        value = row.get("winner")
        if value not in WINNERS:
            raise RowError("winner", f"expected one of {', '.join(map(repr, WINNERS))}, got {value!r}")
        return WINNERS[value]
    flags = []
    for column in _KAGGLE:
        value = row.get(column)
        flag = {"0": 0, "1": 1}.get(value.strip()) if isinstance(value, str) else value
        if isinstance(flag, bool) or flag not in (0, 1):
            raise RowError(column, f"expected 0 or 1, got {value!r}")
        flags.append(int(flag))
    if sum(flags) != 1:
        raise RowError("winner_model_a", f"expected exactly one of {', '.join(_KAGGLE)} to be 1, got {flags}")
    return ("a", "b", "tie")[flags.index(1)]


def _turns(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise RowError(field, "expected a JSON-encoded list of strings, got invalid JSON") from None
    if not isinstance(value, list) or not value:
        raise RowError(field, f"expected a non-empty list of strings (one per turn), got {describe_value(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RowError(field, f"turn {i}: expected a string, got {describe_value(item)}")
    return value


def _kaggle_conversations(row: Mapping[str, Any]) -> tuple[list, list]:
    prompts = _turns(row.get("prompt"), "prompt")
    sides = []
    for column in ("response_a", "response_b"):
        replies = _turns(row.get(column), column)
        if len(replies) != len(prompts):
            raise RowError(column, f"has {len(replies)} turns, the prompt has {len(prompts)}")
        msgs = []
        for question, reply in zip(prompts, replies):
            msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
        sides.append(msgs)
    return sides[0], sides[1]


def _arena(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    winner = _winner(row)
    if "conversation_a" in row:
        a = check_messages(row.get("conversation_a"), "conversation_a")
        b = check_messages(row.get("conversation_b"), "conversation_b")
    else:
        a, b = _kaggle_conversations(row)
    shared = common_prefix(a, b)
    if shared == len(a) and shared == len(b):
        raise RowError("conversation_b", "identical to conversation_a; a battle needs two different replies")
    first_reply = next((i for i, m in enumerate(a) if m["role"] == "assistant"), len(a))
    shared = min(shared, first_reply)
    prompt, text_a = split_conversation(a[:shared], a[shared:], "conversation_a")
    _, text_b = split_conversation(a[:shared], b[shared:], "conversation_b")
    if text_a == text_b:
        raise RowError("conversation_b", "identical to conversation_a; a battle needs two different replies")
    rid = check_id(row.get("question_id", row.get("id")))
    if winner == "tie":
        return [PairRecord(prompt, text_a, text_b, id=rid, tie=True)]
    chosen, rejected = (text_a, text_b) if winner == "a" else (text_b, text_a)
    return [PairRecord(prompt, chosen, rejected, id=rid)]


def _is_arena(row: Mapping[str, Any]) -> bool:
    cols = set(row)
    return {"model_a", "model_b"} <= cols and ("winner" in cols or set(_KAGGLE) <= cols)


register(
    Preset(
        "arena",
        frozenset({"model_a", "model_b", "winner", "conversation_a", "conversation_b", "prompt", "response_a",
                   "response_b", *_KAGGLE, "question_id", "id", "weight"}),
        _is_arena,
        _arena,
        summary="arena battles: winner -> pair, tie / tie (bothbad) -> tie record",
    )
)
