"""Open WebUI feedback exports (Admin > Evaluations > Export: a JSON array).

Each item: ``data.rating`` (1 up, -1 down), ``meta.message_id`` (the rated assistant
message) and ``snapshot.chat.chat`` with the conversation, as ``history.messages`` (id ->
message with ``parentId``) and/or a ``messages`` list. The rated message is the completion and
the messages leading to it are the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.formats import Context, Preset, register
from feedalign.data.messages import check_messages, describe_value, split_conversation
from feedalign.data.records import LabeledRecord, Record
from feedalign.data.validation import parse_label


def _get(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _thread(chat: Mapping[str, Any], message_id: str) -> list[Any]:
    history = _get(chat, "history.messages")
    if isinstance(history, Mapping) and message_id in history:
        thread, seen, current = [], set(), message_id
        while current is not None:
            if current in seen or current not in history:
                raise RowError("snapshot", f"message {current!r} is missing from history or its parents loop")
            seen.add(current)
            thread.append(history[current])
            current = history[current].get("parentId") if isinstance(history[current], Mapping) else None
        return thread[::-1]
    messages = chat.get("messages")
    if isinstance(messages, list):
        for i, msg in enumerate(messages):
            if isinstance(msg, Mapping) and msg.get("id") == message_id:
                return messages[: i + 1]
    raise RowError("meta.message_id", f"message {message_id!r} is not in the chat snapshot")


def _openwebui(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    rating = _get(row, "data.rating")
    if rating is None:
        raise RowError("data.rating", "missing: expected 1 (up) or -1 (down)")
    if rating not in (1, -1, "1", "-1") or isinstance(rating, bool):
        raise RowError("data.rating", f"expected 1 (up) or -1 (down), got {rating!r}")
    label = ctx.label_values.parse(rating, "data.rating") if ctx.label_values else parse_label(rating, "data.rating")
    message_id = _get(row, "meta.message_id")
    if not isinstance(message_id, str) or not message_id:
        raise RowError("meta.message_id", f"expected the rated message's id, got {describe_value(message_id)}")
    chat = _get(row, "snapshot.chat.chat")
    if not isinstance(chat, Mapping):
        raise RowError("snapshot", f"expected snapshot.chat.chat with the conversation, got {describe_value(chat)}")
    messages = check_messages(_thread(chat, message_id), "snapshot")
    if messages[-1]["role"] != "assistant":
        raise RowError("meta.message_id", f"the rated message has role {messages[-1]['role']!r}, expected 'assistant'")
    prompt, completion = split_conversation(messages[:-1], messages[-1:], "snapshot")
    return [LabeledRecord(prompt, completion, label, None)]


register(
    Preset(
        "openwebui",
        frozenset({"data", "meta", "snapshot"}),
        lambda row: {"data", "meta", "snapshot"} <= set(row),
        _openwebui,
        summary="Open WebUI feedback export: data.rating 1/-1 on meta.message_id in snapshot.chat",
        explicit_ids=False,
    )
)
