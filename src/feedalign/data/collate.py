"""Tokenisation and batching of (prompt, completion) examples for causal LMs.

An example is tokenised as ``[bos?] prompt_tokens completion_tokens [eos?]``. Prompt and
completion are tokenised *separately* and concatenated, so the prompt/completion boundary is
exact (no token straddles it); ``completion_mask`` is 1 on the completion tokens (including the
appended eos), which are the tokens whose log-probs a loss counts. The log-prob of token ``t``
is read from the model's output at position ``t - 1``, so position 0 is never a completion
token.

Two batch layouts:
  * ``pad_batch``    - right-padded ``[B, T]`` tensors with an ``attention_mask``;
  * ``pack_examples``- one ``[1, sum T]`` row without padding; ``position_ids`` restart at 0
    for every example, which transformers (>= 4.45 for flash-attention, 5.x for eager/sdpa
    as well) turns into a block-diagonal causal mask when no ``attention_mask`` is given and
    no KV cache is used. ``block_causal_mask`` builds the explicit 4-D mask for backends that
    do not.

Only torch and the standard library are imported (tokenizers are duck-typed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

TRUNCATION_MODES = ("keep_end_of_prompt", "keep_start_of_prompt", "error")
# A prompt is never cut below this many tokens (or its own length) to make room.
DEFAULT_MIN_PROMPT_LENGTH = 8


def _describe(example_id: str | None, prompt: str) -> str:
    if example_id:
        return f"example {example_id!r}"
    snippet = prompt if len(prompt) <= 40 else prompt[:37] + "..."
    return f"example with prompt {snippet!r}"


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def bos_prefix(tokenizer: Any) -> list[int]:
    """``[bos_id]`` if the tokenizer itself prepends a BOS token (Llama-style), else ``[]``.

    Decided by asking the tokenizer: with ``add_special_tokens=True`` does the encoding of a
    probe string start with ``bos_token_id`` while the plain encoding does not?
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    probe = "a"
    with_special = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    plain = _encode(tokenizer, probe)
    return [bos] if with_special[:1] == [bos] and plain[:1] != [bos] else []


def context_prefix(tokenizer: Any, prompt: str) -> list[int]:
    """``bos_prefix`` unless the prompt text already starts with the BOS token (a chat
    template that writes it), so a sequence never starts with two BOS tokens."""
    bos = bos_prefix(tokenizer)
    bos_text = getattr(tokenizer, "bos_token", None)
    if bos and isinstance(bos_text, str) and bos_text and prompt.startswith(bos_text):
        return []
    return bos


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt token ids exactly as ``tokenize_example`` lays them out (BOS included)."""
    return context_prefix(tokenizer, prompt) + _encode(tokenizer, prompt)


_END_IDS: dict[int, tuple[Any, frozenset[int]]] = {}


def turn_end_ids(tokenizer: Any) -> frozenset[int]:
    """EOS and the chat template's end-of-turn token (``data.chat.end_of_turn_ids``), cached."""
    cached = _END_IDS.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer:
        from feedalign.data.chat import end_of_turn_ids

        cached = (tokenizer, frozenset(end_of_turn_ids(tokenizer)))
        _END_IDS[id(tokenizer)] = cached
    return cached[1]


def ends_turn(tokenizer: Any, ids: Sequence[int]) -> bool:
    """Whether ``ids`` already end the turn: the last token, or the last before up to three
    whitespace-only tokens (ChatML writes ``<|im_end|>\\n``), is EOS or end-of-turn."""
    ends = turn_end_ids(tokenizer)
    for back in range(1, min(len(ids), 4) + 1):
        token = ids[-back]
        if token in ends:
            return True
        if not hasattr(tokenizer, "decode") or tokenizer.decode([token]).strip():
            return False
    return False


def completion_ids(tokenizer: Any, completion: str, *, truncated: bool = False) -> list[int]:
    """Completion token ids with the EOS appended, unless the text already ends the turn
    (EOS or a chat template's end-of-turn token) or is marked ``truncated`` (it was cut off,
    so it must not teach the model to stop there)."""
    ids = _encode(tokenizer, completion)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and not truncated and not ends_turn(tokenizer, ids):
        ids.append(eos)
    return ids


def fit_to_length(
    context: list[int],
    prompt_ids: list[int],
    completions: Sequence[list[int]],
    max_length: int,
    *,
    max_prompt_length: int | None = None,
    min_prompt_length: int = DEFAULT_MIN_PROMPT_LENGTH,
    truncation: str = "keep_end_of_prompt",
    where: str = "example",
) -> tuple[list[int], list[list[int]], bool]:
    """One truncation decision for a prompt and all its completions (chosen and rejected
    keep the same prompt tokens).

    1. A prompt longer than ``max_prompt_length`` is cut to it.
    2. If ``context + prompt + longest completion`` exceeds ``max_length``, the prompt is cut
       further, but never below ``min(len(prompt), min_prompt_length)`` tokens (one token
       when there is no BOS); then every completion is cut from the right to what is left.
    ``truncation`` says which end of the prompt goes ("keep_end_of_prompt": the start goes,
    the BOS stays) or "error" to refuse.

    Returns:
        (prompt_ids, completions, truncated): ``truncated`` is True if anything was cut.

    Raises:
        ValueError: ``truncation="error"`` and something is too long, or no completion token
            fits next to the minimum prompt (such a row is quarantined by the trainer).
    """
    keep_end = truncation != "keep_start_of_prompt"

    def keep(ids: list[int], n: int) -> list[int]:
        return ids[len(ids) - n :] if keep_end else ids[:n]

    cut = False
    if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
        if truncation == "error":
            raise ValueError(f"{where}: the prompt has {len(prompt_ids)} tokens, over max_prompt_length="
                             f"{max_prompt_length}, and truncation='error'")
        prompt_ids, cut = keep(prompt_ids, max_prompt_length), True
    longest = max(len(c) for c in completions)
    total = len(context) + len(prompt_ids) + longest
    if total <= max_length:
        return prompt_ids, [list(c) for c in completions], cut
    if truncation == "error":
        raise ValueError(f"{where}: {total} tokens exceed max_length={max_length} and truncation='error'")
    floor = max(min(len(prompt_ids), min_prompt_length), 0 if context else 1)
    prompt_ids = keep(prompt_ids, max(floor, len(prompt_ids) - (total - max_length)))
    room = max_length - len(context) - len(prompt_ids)
    if room < 1:
        raise ValueError(
            f"{where}: does not fit in max_length={max_length}: the prompt keeps at least {floor} tokens "
            f"(min_prompt_length={min_prompt_length}), leaving no room for the completion"
        )
    return prompt_ids, [list(c[:room]) for c in completions], True


def layout(context: list[int], prompt_ids: list[int], completion: list[int]) -> dict[str, list[int]]:
    """``{"input_ids", "completion_mask"}`` of ``context + prompt + completion``."""
    head = context + prompt_ids
    return {"input_ids": head + completion, "completion_mask": [0] * len(head) + [1] * len(completion)}


def tokenize_rows(
    tokenizer: Any,
    prompt: str,
    completions: Sequence[str],
    max_length: int,
    *,
    truncation: str = "keep_end_of_prompt",
    example_id: str | None = None,
    max_prompt_length: int | None = None,
    min_prompt_length: int = DEFAULT_MIN_PROMPT_LENGTH,
    truncated: Sequence[bool] | None = None,
) -> tuple[list[dict[str, list[int]]], bool]:
    """Tokenise one prompt with one or more completions (a pair's chosen and rejected) under
    ONE truncation decision (``fit_to_length``). ``truncated[i]`` marks completion i as cut
    off (no EOS). Returns (one ``{"input_ids", "completion_mask"}`` per completion, whether
    truncation cut anything)."""
    where = _describe(example_id, prompt)
    _check_options(truncation, max_length)
    context = context_prefix(tokenizer, prompt)
    prompt_ids = _encode(tokenizer, prompt)
    marks = list(truncated) if truncated is not None else [False] * len(completions)
    comp = [completion_ids(tokenizer, c, truncated=t) for c, t in zip(completions, marks)]
    if any(not c for c in comp):
        raise ValueError(f"{where}: the completion is empty and the tokenizer has no EOS token to score")
    if not context and not prompt_ids:
        raise ValueError(
            f"{where}: the prompt is empty and the tokenizer adds no BOS token, so the first "
            "completion token would have no context to be scored from"
        )
    prompt_ids, comp, cut = fit_to_length(
        context, prompt_ids, comp, max_length, max_prompt_length=max_prompt_length,
        min_prompt_length=min_prompt_length, truncation=truncation, where=where,
    )
    return [layout(context, prompt_ids, c) for c in comp], cut


def _check_options(truncation: str, max_length: int) -> None:
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"tokenize_example: truncation={truncation!r}; expected one of {TRUNCATION_MODES}")
    if max_length < 2:
        raise ValueError(
            f"tokenize_example: max_length must be >= 2 (a context token and a completion token), got {max_length}"
        )


def tokenize_example(
    tokenizer: Any,
    prompt: str,
    completion: str,
    max_length: int,
    *,
    truncation: str = "keep_end_of_prompt",
    example_id: str | None = None,
    max_prompt_length: int | None = None,
    min_prompt_length: int = DEFAULT_MIN_PROMPT_LENGTH,
    truncated: bool = False,
) -> dict[str, list[int]]:
    """Tokenise one (prompt, completion) example.

    Args:
        tokenizer: a Hugging Face tokenizer (anything callable with ``add_special_tokens``
            returning ``{"input_ids": [...]}``, with ``bos_token_id``/``eos_token_id``).
        prompt, completion: raw text.
        max_length: maximum total length in tokens (BOS and EOS included).
        truncation: "keep_end_of_prompt" (default) drops prompt tokens from the left (after
            the BOS token, which is kept), "keep_start_of_prompt" from the right, "error"
            raises; see ``fit_to_length`` for the order and the minimum prompt.
        example_id: named in error messages.
        max_prompt_length, min_prompt_length: see ``fit_to_length``.
        truncated: the completion was cut off; no EOS is appended.

    Returns:
        ``{"input_ids": list[int], "completion_mask": list[int]}`` of equal length <= max_length,
        completion_mask 1 on completion tokens (and the EOS), 0 on BOS/prompt tokens. The EOS
        is not appended twice: a completion that already ends with EOS (or a chat template's
        end-of-turn token) keeps its own.

    Raises:
        ValueError: unknown truncation mode, max_length < 2, too long with truncation="error",
            no room for a completion token next to the minimum prompt, an empty completion
            with no EOS token, or an empty prompt with no BOS token (an example must have a
            completion token to score and a context to score it from).
    """
    rows, _ = tokenize_rows(
        tokenizer, prompt, [completion], max_length, truncation=truncation, example_id=example_id,
        max_prompt_length=max_prompt_length, min_prompt_length=min_prompt_length, truncated=[truncated],
    )
    return rows[0]


def _check_example(i: int, example: dict[str, Sequence[int]]) -> int:
    n = len(example["input_ids"])
    if n == 0 or len(example["completion_mask"]) != n:
        raise ValueError(
            f"example {i}: input_ids ({n}) and completion_mask ({len(example['completion_mask'])}) "
            "must be non-empty and of equal length"
        )
    if example["completion_mask"][0]:
        raise ValueError(f"example {i}: position 0 cannot be a completion token (it has no context)")
    return n


def pad_batch(
    examples: Sequence[dict[str, Sequence[int]]],
    pad_id: int,
    *,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad tokenised examples into ``[B, T]`` long tensors.

    Returns:
        ``input_ids`` (pad_id on padding), ``attention_mask`` (1 on real tokens) and
        ``completion_mask`` (0 on padding), each ``[B, T]`` with T the longest example rounded
        up to ``pad_to_multiple_of``.
    """
    if not examples:
        raise ValueError("pad_batch: no examples")
    lengths = [_check_example(i, ex) for i, ex in enumerate(examples)]
    width = max(lengths)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    batch = len(examples)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    completion_mask = torch.zeros((batch, width), dtype=torch.long)
    for row, (example, n) in enumerate(zip(examples, lengths)):
        input_ids[row, :n] = torch.as_tensor(list(example["input_ids"]), dtype=torch.long)
        attention_mask[row, :n] = 1
        completion_mask[row, :n] = torch.as_tensor(list(example["completion_mask"]), dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def pack_examples(examples: Sequence[dict[str, Sequence[int]]]) -> dict[str, Any]:
    """Concatenate tokenised examples into one padding-free row.

    Returns (S = total number of tokens, N = number of examples):
        input_ids        [1, S] long
        position_ids     [1, S] long, restarting at 0 for every example
        completion_mask  [1, S] long
        segment_ids      [1, S] long, example index 0..N-1 of every token
        seq_lens         [N] long
        cu_seqlens       [N + 1] int32, cumulative lengths starting at 0 (flash-attention layout)
        max_seqlen       int, the longest example (a host value: variable-length attention
                         kernels take it as an argument)

    Feed ``input_ids`` and ``position_ids`` with NO attention mask (and no KV cache), and the
    boundaries as ``policies.varlen.packed_attention_kwargs`` (``policies.hf.packed_sequence_logps``
    does both); see ``block_causal_mask`` for an explicit mask.
    """
    if not examples:
        raise ValueError("pack_examples: no examples")
    lengths = [_check_example(i, ex) for i, ex in enumerate(examples)]
    input_ids = torch.tensor([t for ex in examples for t in ex["input_ids"]], dtype=torch.long)
    completion_mask = torch.tensor([m for ex in examples for m in ex["completion_mask"]], dtype=torch.long)
    seq_lens = torch.tensor(lengths, dtype=torch.long)
    segment_ids = torch.repeat_interleave(torch.arange(len(lengths)), seq_lens)
    starts = torch.cumsum(seq_lens, 0) - seq_lens
    position_ids = torch.arange(int(seq_lens.sum())) - starts[segment_ids]
    cu_seqlens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu_seqlens[1:] = torch.cumsum(seq_lens, 0).to(torch.int32)
    return {
        "input_ids": input_ids[None],
        "position_ids": position_ids[None],
        "completion_mask": completion_mask[None],
        "segment_ids": segment_ids[None],
        "seq_lens": seq_lens,
        "cu_seqlens": cu_seqlens,
        "max_seqlen": max(lengths),
    }


def block_causal_mask(segment_ids: torch.Tensor, *, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Explicit 4-D block-diagonal causal mask ``[B, 1, S, S]`` for packed rows.

    Query ``q`` may attend key ``k`` iff ``k <= q`` and both belong to the same segment.
    With ``dtype=torch.bool`` True means "attend" (the SDPA convention); with a floating
    dtype the mask is additive (0 where attended, the dtype's minimum elsewhere), as eager
    attention implementations add it to the scores.
    """
    seg = segment_ids if segment_ids.dim() == 2 else segment_ids[None]
    length = seg.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seg.device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    allowed = allowed[:, None]
    if dtype == torch.bool:
        return allowed
    zero = torch.zeros((), dtype=dtype, device=seg.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)
