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


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt token ids exactly as ``tokenize_example`` lays them out (BOS included)."""
    return bos_prefix(tokenizer) + _encode(tokenizer, prompt)


def tokenize_example(
    tokenizer: Any,
    prompt: str,
    completion: str,
    max_length: int,
    *,
    truncation: str = "keep_end_of_prompt",
    example_id: str | None = None,
) -> dict[str, list[int]]:
    """Tokenise one (prompt, completion) example.

    Args:
        tokenizer: a Hugging Face tokenizer (anything callable with ``add_special_tokens``
            returning ``{"input_ids": [...]}``, with ``bos_token_id``/``eos_token_id``).
        prompt, completion: raw text.
        max_length: maximum total length in tokens (BOS and EOS included).
        truncation: "keep_end_of_prompt" (default) drops prompt tokens from the left (after
            the BOS token, which is kept), then completion tokens from the right;
            "keep_start_of_prompt" drops prompt tokens from the right instead; "error" raises.
        example_id: named in error messages.

    Returns:
        ``{"input_ids": list[int], "completion_mask": list[int]}`` of equal length <= max_length,
        completion_mask 1 on completion tokens (and the EOS), 0 on BOS/prompt tokens.

    Raises:
        ValueError: unknown truncation mode, max_length < 2, too long with truncation="error",
            an empty completion with no EOS token, or an empty prompt with no BOS token (an
            example must have a completion token to score and a context to score it from).
    """
    where = _describe(example_id, prompt)
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"tokenize_example: truncation={truncation!r}; expected one of {TRUNCATION_MODES}")
    if max_length < 2:
        raise ValueError(
            f"tokenize_example: max_length must be >= 2 (a context token and a completion token), got {max_length}"
        )
    bos = bos_prefix(tokenizer)
    prompt_ids = _encode(tokenizer, prompt)
    completion_ids = _encode(tokenizer, completion)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        completion_ids.append(eos)
    if not completion_ids:
        raise ValueError(f"{where}: the completion is empty and the tokenizer has no EOS token to score")
    if not bos and not prompt_ids:
        raise ValueError(
            f"{where}: the prompt is empty and the tokenizer adds no BOS token, so the first "
            "completion token would have no context to be scored from"
        )
    excess = len(bos) + len(prompt_ids) + len(completion_ids) - max_length
    if excess > 0:
        if truncation == "error":
            raise ValueError(
                f"{where}: {len(bos) + len(prompt_ids) + len(completion_ids)} tokens exceed "
                f"max_length={max_length} and truncation='error'"
            )
        # Keep at least one context token (BOS or the last/first prompt token).
        min_prompt = 0 if bos else 1
        drop_prompt = min(excess, len(prompt_ids) - min_prompt)
        if truncation == "keep_end_of_prompt":
            prompt_ids = prompt_ids[drop_prompt:]
        else:
            prompt_ids = prompt_ids[: len(prompt_ids) - drop_prompt]
        # max_length >= 2 and at most one context token is kept, so >= 1 completion token stays.
        completion_ids = completion_ids[: len(completion_ids) - (excess - drop_prompt)]
    context = bos + prompt_ids
    return {
        "input_ids": context + completion_ids,
        "completion_mask": [0] * len(context) + [1] * len(completion_ids),
    }


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
