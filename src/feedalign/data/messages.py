"""Conversations (lists of ``{"role", "content"}`` messages) rendered to plain text.

One fixed, deterministic template, so that conversational and plain-text data meet in the
same ``prompt`` / ``completion`` strings:

    <|system|>\\n{content}\\n<|user|>\\n{content}\\n<|assistant|>\\n{content}\\n

Every message becomes ``<|{role}|>\\n{content}\\n``. A prompt ends with the generation header
``<|assistant|>\\n`` and the completion starts right after it, so for any split point

    prompt_text + completion_text == render_messages(prompt_messages + completion_messages)

This rendering is what records store (it is model-agnostic, so ids and conflict checks do not
depend on a tokenizer) and the fallback for a tokenizer without a chat template. The texts of a
conversation are :class:`ChatText` strings that remember their messages, so tokenisation can
render them with the tokenizer's own template instead (:mod:`feedalign.data.chat`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from feedalign.data.errors import RowError

GENERATION_HEADER = "<|assistant|>\n"


class ChatText(str):
    """A rendered text (fixed template) that remembers the messages it was rendered from.

    It is a ``str`` everywhere (ids, conflicts, quarantine files see the fixed rendering);
    ``messages`` lets :mod:`feedalign.data.chat` render the same turn with a tokenizer's chat
    template. Any string operation returns a plain ``str``, which then counts as plain text.
    """

    messages: tuple[dict[str, str], ...]

    def __new__(cls, text: str, messages: Sequence[Mapping[str, str]]) -> "ChatText":
        obj = super().__new__(cls, text)
        obj.messages = tuple(dict(m) for m in messages)
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChatText, (str(self), self.messages))


def render_messages(messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False) -> str:
    """Render messages as ``<|role|>\\ncontent\\n`` blocks.

    Args:
        messages: ``[{"role": "user", "content": "..."}, ...]`` (already validated).
        add_generation_prompt: append ``<|assistant|>\\n`` so a model continues as the assistant.
    """
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return text + GENERATION_HEADER if add_generation_prompt else text


def check_messages(value: Any, field: str) -> list[dict[str, str]]:
    """Validate a list of messages; returns ``[{"role", "content"}]`` (extra keys dropped)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise RowError(field, f"expected a non-empty list of messages, got {describe_value(value)}")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, Mapping):
            raise RowError(
                field, f"message {i}: expected an object with 'role' and 'content', got {describe_value(msg)}"
            )
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(role, str) or not role.strip():
            raise RowError(
                field, f"message {i}: expected 'role' to be a non-empty string, got {describe_value(role)}"
            )
        if not isinstance(content, str):
            raise RowError(
                field, f"message {i}: expected 'content' to be a string, got {describe_value(content)}"
            )
        out.append({"role": role, "content": content})
    return out


def split_conversation(
    prompt_messages: Sequence[Mapping[str, str]], completion_messages: Sequence[Mapping[str, str]], field: str
) -> tuple[str, str]:
    """Prompt and completion texts for a conversation split before an assistant turn.

    The completion must start with an assistant message; its header moves into the prompt.
    """
    if not prompt_messages:
        raise RowError(field, "expected at least one message before the assistant reply (the prompt)")
    if not completion_messages or completion_messages[0]["role"] != "assistant":
        first = completion_messages[0]["role"] if completion_messages else "nothing"
        raise RowError(field, f"expected the completion to start with an 'assistant' message, got {first!r}")
    prompt_text = render_messages(prompt_messages, add_generation_prompt=True)
    completion_text = render_messages(completion_messages)[len(GENERATION_HEADER) :]
    if not completion_text.strip():
        raise RowError(field, "expected a non-empty assistant reply, got empty content")
    return ChatText(prompt_text, prompt_messages), ChatText(completion_text, completion_messages)


def split_last_assistant(messages: Sequence[Mapping[str, str]], field: str) -> tuple[str, str]:
    """``messages`` convention: the final message is the assistant completion, the rest the prompt."""
    if messages[-1]["role"] != "assistant":
        raise RowError(
            field, f"expected the last message to have role 'assistant', got {messages[-1]['role']!r}"
        )
    return split_conversation(messages[:-1], messages[-1:], field)


def common_prefix(a: Sequence[Mapping[str, str]], b: Sequence[Mapping[str, str]]) -> int:
    """Number of leading messages that ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def describe_value(value: Any) -> str:
    if value is None:
        return "null or missing"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    return type(value).__name__
