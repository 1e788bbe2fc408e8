"""Sampling completions from a causal LM, with the same rendering training uses.

A prompt is encoded exactly as ``data.collate.tokenize_example`` encodes it (so a prompt
that training saw through the chat template is sampled through it too); ``chat=True``
renders plain prompts with the tokenizer's chat template first (one user message, then the
generation header). Generation stops at EOS or at the template's end-of-turn token. A
sample that stops at ``max_new_tokens`` instead is marked ``truncated``: used as training
data, it gets no EOS (``data.collate``), so the model is not taught to stop mid-sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Sample:
    """One sampled completion; ``truncated``: it ran into ``max_new_tokens``."""

    prompt: str
    text: str
    truncated: bool


def render_prompts(tokenizer: Any, prompts: Sequence[str], *, chat: bool) -> list[str]:
    """The text a model continues: the prompt itself, or with ``chat`` the chat template's
    rendering of it as one user message (already-rendered prompts are left alone)."""
    if not chat:
        return list(prompts)
    from feedalign.data.chat import render_prompt

    marker = render_prompt(tokenizer, [{"role": "user", "content": "x"}])
    header = marker[marker.rfind("x") + 1 :]  # e.g. "<|im_end|>\n<|im_start|>assistant\n"
    return [p if header and p.endswith(header) else render_prompt(tokenizer, [{"role": "user", "content": p}])
            for p in prompts]


def _left_pad(encoded: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(e) for e in encoded)
    ids = torch.tensor([[pad_id] * (width - len(e)) + e for e in encoded], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], dtype=torch.long, device=device)
    return ids, mask


def sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    chat: bool = False,
    min_new_tokens: int = 0,
    suppress_tokens: Sequence[int] = (),
) -> list[Sample]:
    """Sample one completion per prompt (text after the prompt, special tokens removed).

    ``temperature == 0`` decodes greedily. Constraints on what may be generated (transformers'
    own processors): ``min_new_tokens`` masks the stop tokens before that many new tokens,
    ``suppress_tokens`` are never generated. Sampling is seeded per batch (``seed`` + index of
    the batch's first prompt) inside a forked RNG, so results depend only on the arguments
    and the global RNG state is left untouched. The model is put in eval mode and restored.
    """
    from feedalign.data.collate import encode_prompt, turn_end_ids

    if not prompts:
        return []
    rendered = render_prompts(tokenizer, prompts, chat=chat)
    stop = sorted(turn_end_ids(tokenizer))
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    device = next(model.parameters()).device
    options: dict[str, Any] = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens, "use_cache": True}
    if min_new_tokens:
        options["min_new_tokens"] = int(min_new_tokens)
    if suppress_tokens:
        options["suppress_tokens"] = [int(t) for t in suppress_tokens]
    if temperature > 0:
        options.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
    was_training = model.training
    model.eval()
    out: list[Sample] = []
    try:
        for start in range(0, len(rendered), batch_size):
            encoded = [encode_prompt(tokenizer, p) for p in rendered[start : start + batch_size]]
            for offset, ids in enumerate(encoded):
                if not ids:
                    raise ValueError(f"generate: prompt {start + offset} encodes to no tokens and there is no BOS")
            ids, mask = _left_pad(encoded, pad_id, device)
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(seed + start)
                generated = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad_id,
                                           eos_token_id=stop or None, **options)
            for offset, row in enumerate(generated[:, ids.shape[1] :].tolist()):
                ends = [i for i, t in enumerate(row) if t in stop]
                text = tokenizer.decode(row[: ends[0]] if ends else row, skip_special_tokens=True)
                out.append(Sample(rendered[start + offset], text, truncated=not ends))
    finally:
        model.train(was_training)
    return out
