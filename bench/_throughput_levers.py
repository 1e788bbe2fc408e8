"""Lever experiments for bench/throughput.py (``--levers``): a bare DPO step built from
feedalign's public pieces, to measure what each speed lever would buy the trainer.

The step is the trainer's arithmetic without its bookkeeping: tokenise with
``feedalign.data.collate.tokenize_example``, build a batch (padded ``pad_batch`` or padding-free
``pack_examples``), per-sequence log-probs with ``feedalign.policies.hf`` (chunked over
completion rows), the registered ``dpo`` loss against reference log-probs computed once
before training, backward, gradient clipping, AdamW. Nothing is read back to the host
inside a step. Variants:

* ``padded``         right-padded [2B, T] chosen+rejected batch (the trainer's layout);
* ``packed-sdpa``    one padding-free row; transformers derives a block-diagonal mask from
                     the restarting position ids and SDPA runs over the whole row (S^2);
* ``packed-varlen``  one padding-free row with ``feedalign_varlen`` attention
                     (``feedalign.policies.varlen``: torch's flash variable-length kernel on
                     CUDA, per-sequence causal SDPA elsewhere), what ``train.packing`` uses;
* ``naive-logps``    padded, full [2B, T, V] logits then log_softmax (what chunking avoids);
* ``mb16``           padded, 16 pairs per micro-batch (2 steps' worth of data per step);
* ``+compile``       any of the above with the decoder under ``torch.compile(dynamic=True)``.
"""

from __future__ import annotations

from typing import Any

import torch

from _throughput_workload import PeakMemory, RunResult, pair_texts

LEVERS = ("padded", "packed-sdpa", "packed-varlen", "naive-logps", "mb16", "padded+compile", "packed-varlen+compile")


def _register_varlen() -> str:
    from feedalign.policies.varlen import register

    return register()


def _tokenised(tokenizer: Any, pairs: list[dict[str, list[int]]]) -> list[tuple[dict, dict]]:
    from feedalign.data.collate import tokenize_example

    out = []
    for row in pair_texts(pairs):
        chosen = tokenize_example(tokenizer, row["prompt"], row["chosen"], 4096)
        rejected = tokenize_example(tokenizer, row["prompt"], row["rejected"], 4096)
        out.append((chosen, rejected))
    return out


def _batch(rows: list[dict], layout: str, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    from feedalign.data.collate import pack_examples, pad_batch

    tensors = pack_examples(rows) if layout == "packed" else pad_batch(rows, pad_id)
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}


def _logps(model: Any, batch: dict[str, torch.Tensor], naive: bool) -> torch.Tensor:
    from feedalign.policies.hf import batch_logps, naive_sequence_logps

    if naive:
        return naive_sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    return batch_logps(model, batch)


def _setup(lever: str, model_dir: str, dtype: torch.dtype, device: torch.device):
    from feedalign.policies.hf import load_causal_lm

    packed = lever.startswith("packed")
    attn = _register_varlen() if "varlen" in lever else "sdpa"
    model = load_causal_lm(model_dir, dtype=dtype, attn_implementation=attn).to(device)
    model.train()
    if lever.endswith("+compile"):
        model.get_decoder().compile(dynamic=True)
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=fused, foreach=None if fused else True)
    return model, optimizer, "packed" if packed else "padded"


def run_lever(
    lever: str, *, model_dir: str, tokenizer_dir: str, pairs: list[dict[str, list[int]]], steps: int,
    device: torch.device, dtype: torch.dtype, **_: Any,
) -> RunResult:
    """``steps`` DPO steps of one lever variant (reference log-probs computed first, inside
    the wall time; the reference pass uses the same layout and attention as the policy)."""
    from feedalign.losses import get_loss
    from feedalign.policies.hf import load_tokenizer

    result = RunResult()
    per_step = 16 if lever == "mb16" else 8
    # mb16 takes the same data in half as many steps (at least 2, wrapping around the data).
    steps = max(2, steps // 2) if lever == "mb16" else steps
    tokenizer = load_tokenizer(tokenizer_dir)
    dpo = get_loss("dpo")
    hparams = dpo.resolve_hparams()
    with PeakMemory(device) as memory:
        result.start(device)
        model, optimizer, layout = _setup(lever, model_dir, dtype, device)
        data = _tokenised(tokenizer, pairs)
        batches = []
        for s in range(steps):
            chunk = [data[i % len(data)] for i in range(s * per_step, (s + 1) * per_step)]
            batches.append([c for c, _ in chunk] + [r for _, r in chunk])
        with torch.no_grad():
            reference = [_logps(model, _batch(rows, layout, tokenizer.pad_token_id, device), False) for rows in batches]
        for rows, ref in zip(batches, reference):
            batch = _batch(rows, layout, tokenizer.pad_token_id, device)
            policy = _logps(model, batch, lever == "naive-logps")
            b = len(rows) // 2
            losses, _ = dpo.fn(policy[:b], policy[b:], ref[:b], ref[b:], **hparams)
            loss = losses.mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            result.mark_step(device)
            result.losses.append(loss.detach())
        result.stop(device)
    result.losses = [float(x) for x in result.losses[:3]]
    result.peak_mem_gib, result.mem_kind = memory.gib, memory.kind
    return result
