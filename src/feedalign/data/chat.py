"""Conversations rendered with the tokenizer's own chat template.

A conversational row (message lists) is shown to the model exactly as the model was tuned
to see it:

    prompt_text     = tokenizer.apply_chat_template(prompt_messages, add_generation_prompt=True)
    full_text       = tokenizer.apply_chat_template(prompt_messages + completion_messages)
    completion_text = full_text[len(prompt_text):]

and the completion's tokens are the rest of ``full_text``'s tokens after the prompt's, so the
pair (prompt, completion) is token-identical to rendering the whole conversation. The
template's end-of-turn token (``<|im_end|>`` in ChatML) ends the completion: no EOS is
appended after it (``data.collate``).

A tokenizer without a chat template falls back to feedalign's fixed rendering
(``<|role|>\\ncontent\\n`` blocks, :mod:`feedalign.data.messages`), with one warning per
process. Plain-string prompts stay plain text unless a source sets ``chat_template: true``,
which wraps the prompt as one user message and the completion as the assistant's reply.

Tokenizers are duck-typed (``apply_chat_template``, ``chat_template``, ``__call__``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from feedalign.data.messages import ChatText, render_messages


Messages = Sequence[Mapping[str, str]]
_WARNED: set[int] = set()
_PROBE = ({"role": "user", "content": "x"}, {"role": "assistant", "content": "y"})


class ChatTemplateError(ValueError):
    """The chat template does not render a prompt as a prefix of its conversation."""


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) and hasattr(tokenizer, "apply_chat_template")


def _warn_fallback(tokenizer: Any) -> None:
    if id(tokenizer) in _WARNED:
        return
    _WARNED.add(id(tokenizer))
    warnings.warn(
        f"{type(tokenizer).__name__} has no chat template; conversations are rendered with feedalign's "
        "fixed template (<|role|>\\ncontent\\n blocks, docs/real_model.md)",
        stacklevel=3,
    )


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """The prompt text a model continues as the assistant (generation header included)."""
    if not has_chat_template(tokenizer):
        _warn_fallback(tokenizer)
        return render_messages(messages, add_generation_prompt=True)
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)


def render_turn(
    tokenizer: Any, prompt_messages: Messages, completion_messages: Messages, *, truncated: bool = False
) -> tuple[str, str]:
    """(prompt_text, completion_text) of one conversation split before the assistant turn.

    ``truncated``: the last message was cut off (e.g. at a sampling length limit); the
    completion then stops right after that message's content, without the template's
    end-of-turn markup, so the model is not taught to end the turn there.

    Raises:
        ChatTemplateError: the template renders the prompt differently inside the full
            conversation (the completion would not be a continuation of the prompt).
    """
    prompt_text = render_prompt(tokenizer, prompt_messages)
    if has_chat_template(tokenizer):
        full = tokenizer.apply_chat_template(list(prompt_messages) + list(completion_messages), tokenize=False)
    else:
        full = render_messages(list(prompt_messages) + list(completion_messages))
    if not full.startswith(prompt_text):
        raise ChatTemplateError(
            "the chat template renders the prompt differently inside the whole conversation, so the "
            "reply is not a continuation of the prompt (templates that drop earlier turns are not supported)"
        )
    completion_text = full[len(prompt_text):]
    if truncated:
        content = completion_messages[-1]["content"]
        end = completion_text.rfind(content) if content else -1
        if end < 0:
            raise ChatTemplateError("the chat template does not reproduce the truncated reply's content")
        completion_text = completion_text[: end + len(content)]
    return prompt_text, completion_text


def conversation(prompt: str, completion: str, *, wrap_plain: bool) -> tuple[list[dict], list[dict]] | None:
    """The (prompt, completion) messages behind two record texts: those they were rendered
    from (``ChatText``), or with ``wrap_plain`` a plain prompt as one user message and a
    plain completion as the assistant reply. None for plain texts otherwise."""
    if isinstance(prompt, ChatText) and isinstance(completion, ChatText):
        return [dict(m) for m in prompt.messages], [dict(m) for m in completion.messages]
    if wrap_plain and not isinstance(prompt, ChatText) and not isinstance(completion, ChatText):
        return [{"role": "user", "content": str(prompt)}], [{"role": "assistant", "content": str(completion)}]
    return None


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn: EOS, and the special token the chat template
    writes right after a reply (found by rendering a probe conversation)."""
    ids: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids.append(int(eos))
    if has_chat_template(tokenizer):
        try:
            _, completion = render_turn(tokenizer, _PROBE[:1], _PROBE[1:])
        except Exception:  # a template that rejects the probe has no detectable end-of-turn
            return ids
        tail = completion[completion.find("y") + 1 :]
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        for token in tokenizer(tail, add_special_tokens=False)["input_ids"]:
            if token in special:
                if token not in ids:
                    ids.append(int(token))
                break
    return ids
