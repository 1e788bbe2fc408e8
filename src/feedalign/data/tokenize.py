"""Tokenisation of training examples: chat-template or plain rendering, one truncation
decision per pair, truncated and rejected rows counted (docs/real_model.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from feedalign.data.batching import Example
from feedalign.data.errors import FeedbackDataError


@dataclass(frozen=True)
class TokenizeOptions:
    """How a source's examples become tokens (``data.collate.fit_to_length``, ``data.chat``).

    ``chat_template``: None renders message rows with the tokenizer's chat template and keeps
    plain-string rows as text; True also wraps a plain prompt as one user message (and its
    completion as the assistant reply); False keeps the fixed rendering for every row.
    """

    max_length: int = 512
    max_prompt_length: int | None = None
    min_prompt_length: int = 8
    chat_template: bool | None = None


@dataclass
class TokenizedSource:
    """``examples`` that fit, how many of them were ``truncated``, and the ``rejected``
    ones as (example, reason)."""

    examples: list[Example]
    truncated: int = 0
    rejected: list[tuple[Example, str]] = field(default_factory=list)


def _chat_rows(tokenizer: Any, ex: Example, options: TokenizeOptions) -> tuple[str, list[tuple[str, list[int]]], list[int]] | None:
    """(prompt text, [(completion text, completion ids)], prompt ids) rendered with the chat
    template, or None for a row that stays plain text. The completion ids are the rest of the
    whole conversation's tokens after the prompt's (token-identical rendering)."""
    from feedalign.data.chat import conversation, render_turn
    from feedalign.data.collate import ends_turn

    if options.chat_template is False or ex.steer_weights is not None:
        return None
    texts = [ex.completion] + ([ex.rejected] if ex.rejected is not None else [])
    convs = [conversation(ex.prompt, t, wrap_plain=options.chat_template is True) for t in texts]
    if any(c is None for c in convs):
        return None
    eos = getattr(tokenizer, "eos_token_id", None)
    prompt_text, prompt_ids, out = "", [], []
    for (prompt_msgs, completion_msgs), cut in zip(convs, _truncation_marks(ex)):  # type: ignore[misc]
        prompt_text, completion_text = render_turn(tokenizer, prompt_msgs, completion_msgs, truncated=cut)
        prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        full = list(tokenizer(prompt_text + completion_text, add_special_tokens=False)["input_ids"])
        if full[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the prompt's tokens are not a prefix of the whole conversation's tokens")
        ids = full[len(prompt_ids):]
        if eos is not None and not cut and not ends_turn(tokenizer, ids):
            ids.append(eos)
        out.append((completion_text, ids))
    return prompt_text, out, prompt_ids


def _truncation_marks(ex: Example) -> list[bool]:  # one per completion: [chosen(, rejected)]
    return [ex.truncated] + ([ex.rejected_truncated] if ex.rejected is not None else [])


def _tokenize_one(tokenizer: Any, ex: Example, options: TokenizeOptions) -> tuple[Example, bool]:
    from feedalign.data.collate import context_prefix, fit_to_length, layout, tokenize_rows

    fit = dict(max_prompt_length=options.max_prompt_length, min_prompt_length=options.min_prompt_length)
    chat = _chat_rows(tokenizer, ex, options)
    if chat is None:
        texts = [ex.completion] + ([ex.rejected] if ex.rejected is not None else [])
        rows, cut = tokenize_rows(tokenizer, ex.prompt, texts, options.max_length, example_id=ex.id,
                                  truncated=_truncation_marks(ex), **fit)
    else:
        prompt_text, completions, prompt_ids = chat
        context = context_prefix(tokenizer, prompt_text)
        prompt_ids, comp, cut = fit_to_length(context, prompt_ids, [c for _, c in completions], options.max_length,
                                              where=f"example {ex.id!r}", **fit)
        rows = [layout(context, prompt_ids, c) for c in comp]
        texts = [t for t, _ in completions]
        ex = replace(ex, prompt=prompt_text, completion=texts[0],
                     rejected=texts[1] if ex.rejected is not None else None)
    if ex.rejected is not None and rows[0]["input_ids"] == rows[1]["input_ids"]:
        raise ValueError("chosen and rejected are identical after truncation (nothing to prefer)")
    ref_tokens, ref_rejected = None, None
    if ex.plain_prompt is not None:
        refs, _ = tokenize_rows(tokenizer, ex.plain_prompt, texts, options.max_length, example_id=ex.id,
                                truncated=_truncation_marks(ex), **fit)
        ref_tokens, ref_rejected = refs[0], (refs[1] if len(refs) > 1 else None)
    out = replace(ex, tokens=rows[0], rejected_tokens=rows[1] if len(rows) > 1 else None,
                  reference_tokens=ref_tokens, reference_rejected_tokens=ref_rejected)
    return out, cut


def tokenize_source(examples: Sequence[Example], tokenizer: Any, options: TokenizeOptions) -> TokenizedSource:
    """Attach token ids to every example that fits; the others are returned as rejected with
    the reason (the caller raises or quarantines)."""
    result = TokenizedSource([])
    for ex in examples:
        try:
            tokenized, cut = _tokenize_one(tokenizer, ex, options)
        except ValueError as exc:
            result.rejected.append((ex, str(exc)))
            continue
        result.examples.append(tokenized)
        result.truncated += int(cut)
    return result


def tokenize_examples(examples: Sequence[Example], tokenizer: Any, max_length: int | TokenizeOptions) -> list[Example]:
    """Attach token ids to every example; a record that cannot be tokenised (nothing left to
    score after truncation, ...) fails naming where it came from."""
    options = max_length if isinstance(max_length, TokenizeOptions) else TokenizeOptions(max_length=max_length)
    result = tokenize_source(examples, tokenizer, options)
    if result.rejected:
        ex, reason = result.rejected[0]
        raise FeedbackDataError(ex.where or ex.id, reason)
    return result.examples
