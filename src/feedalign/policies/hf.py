"""Hugging Face causal LMs as policies: loading (``policies.loading``), per-sequence log-probs,
generation (``policies.generation``).

``sequence_logps`` is the workhorse of every trainer: the sum over completion tokens of
``log pi(y_t | x, y_<t)`` per sequence, in fp32, differentiable. It runs the transformer
body once, keeps only the hidden states that predict completion tokens (the log-prob of
token ``t`` comes from the hidden state at ``t - 1``), and evaluates the vocabulary
log-softmax over those rows in chunks (see ``chunked_logps``), so a full ``[B, T, V]``
logits tensor never exists. ``naive_sequence_logps`` is the straightforward
``model(...).logits`` version, kept as the reference for tests.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from feedalign.policies.chunked_logps import linear_target_logps, module_target_logps

from feedalign.policies.loading import (  # noqa: F401  (the loading API lives next door)
    _resolve_source,
    cached_snapshot,
    default_threads,
    disable_dropout,
    enable_gradient_checkpointing,
    load_causal_lm,
    load_tokenizer,
    resolve_dtype,
    set_threads,
)


# ----------------------------------------------------------------------------- log-probs


def unwrap_model(model: Any) -> Any:
    """The transformers ``*ForCausalLM`` inside a peft wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _head_transform(config: Any) -> tuple[float, float | None]:
    """(scale, softcap) applied to ``lm_head(h)`` by known architectures."""
    scale = 1.0
    if getattr(config, "logit_scale", None) is not None:  # Cohere
        scale *= float(config.logit_scale)
    if getattr(config, "logits_scaling", None) is not None:  # Granite
        scale /= float(config.logits_scaling)
    softcap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3
    return scale, (float(softcap) if softcap else None)


_HEAD_CHECKED: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def _head_logits_full(base: Any, hidden: torch.Tensor) -> torch.Tensor:
    scale, softcap = _head_transform(base.config)
    logits = base.get_output_embeddings()(hidden).float() * scale
    return softcap * torch.tanh(logits / softcap) if softcap is not None else logits


def _check_head(base: Any) -> None:
    """Once per model: verify that backbone + LM head (+ known scaling) reproduces the
    model's own logits, so unknown logit post-processing fails loudly instead of silently
    giving wrong log-probs."""
    if base in _HEAD_CHECKED:
        return
    param = next(base.parameters())
    ids = (torch.arange(4, device=param.device) % base.config.vocab_size)[None]
    training = {m: m.training for m in base.modules()}
    base.eval()
    try:
        with torch.no_grad():
            expected = base(input_ids=ids, use_cache=False).logits.float()
            hidden = _backbone(base)(input_ids=ids, use_cache=False).last_hidden_state
            got = _head_logits_full(base, hidden)
    finally:
        for module, mode in training.items():
            module.training = mode
    tol = (1e-4 if param.dtype == torch.float32 else 2e-2) * (1.0 + expected.abs().max().item())
    if got.shape != expected.shape or (got - expected).abs().max().item() > tol:
        raise NotImplementedError(
            f"sequence_logps: {type(base).__name__} (model_type={base.config.model_type!r}) post-processes "
            "its logits in a way this function does not reproduce; use naive_sequence_logps"
        )
    _HEAD_CHECKED[base] = True


def _backbone(base: Any) -> Any:
    decoder = base.get_decoder()
    if decoder is base:
        raise NotImplementedError(f"sequence_logps: cannot find the decoder body of {type(base).__name__}")
    return decoder


def _completion_token_logps(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    completion_mask: torch.Tensor,
    position_ids: torch.Tensor | None,
    chunk_size: int,
    *,
    head_as_module: bool = False,
    attn_kwargs: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs of every completion token. Returns (logps [N] fp32, rows [N], cols [N]),
    where (rows, cols + 1) index the scored tokens in ``input_ids``.

    ``head_as_module`` calls the LM head as a module on the completion positions, chunk by
    chunk (DeepSpeed ZeRO-3 gathers its weight only inside that call) instead of reading its
    weight. ``attn_kwargs`` go to the decoder (a packed row's ``cu_seq_lens_q`` ...)."""
    if input_ids.shape != completion_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and completion_mask {tuple(completion_mask.shape)} differ")
    if completion_mask[:, 0].any():
        raise ValueError("completion_mask[:, 0] must be 0: the first token has no context to be scored from")
    if attention_mask is not None and attention_mask.dim() == 2 and (completion_mask.bool() & ~attention_mask.bool()).any():
        raise ValueError("completion_mask marks tokens that attention_mask marks as padding")
    base = unwrap_model(model)
    _check_head(base)
    hidden = _backbone(base)(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
        **(attn_kwargs or {}),
    ).last_hidden_state
    rows, cols = completion_mask[:, 1:].nonzero(as_tuple=True)
    picked_hidden = hidden[:, :-1][rows, cols]
    targets = input_ids[:, 1:][rows, cols]
    scale, softcap = _head_transform(base.config)
    head = base.get_output_embeddings()
    if not head_as_module and (type(head) is torch.nn.Linear or type(head) is torch.nn.Embedding):
        bias = getattr(head, "bias", None)
        logps = linear_target_logps(
            picked_hidden, head.weight, bias, targets, chunk_size=chunk_size, scale=scale, softcap=softcap
        )
    else:  # e.g. a LoRA-wrapped lm_head
        logps = module_target_logps(picked_hidden, head, targets, chunk_size=chunk_size, scale=scale, softcap=softcap)
    return logps, rows, cols


def sequence_logps(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    completion_mask: torch.Tensor,
    *,
    chunk_size: int = 1024,
    position_ids: torch.Tensor | None = None,
    head_as_module: bool = False,
) -> torch.Tensor:
    """Sum of completion-token log-probs per sequence, fp32, differentiable.

    ``logp[b] = sum_t completion_mask[b, t] * log pi(input_ids[b, t] | input_ids[b, :t])``

    Args:
        model: a transformers causal LM, possibly peft-wrapped.
        input_ids, completion_mask: ``[B, T]`` long; completion_mask[:, 0] must be 0.
        attention_mask: ``[B, T]`` (1 = real token), a 4-D mask, or None.
        chunk_size: tokens whose fp32 vocabulary logits exist at once.
        position_ids: ``[B, T]`` or None.
        head_as_module: call the LM head as a module (DeepSpeed ZeRO-3).

    Returns:
        ``[B]`` fp32.
    """
    logps, rows, _ = _completion_token_logps(
        model, input_ids, attention_mask, completion_mask, position_ids, chunk_size, head_as_module=head_as_module
    )
    out = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=logps.device)
    return out.index_add(0, rows, logps)


def packed_sequence_logps(
    model: Any,
    packed: dict[str, Any],
    *,
    chunk_size: int = 1024,
    explicit_mask: bool = False,
    head_as_module: bool = False,
) -> torch.Tensor:
    """``sequence_logps`` for a batch from ``collate.pack_examples``: one value per example.

    No attention mask is passed. The sequence boundaries go to the model as
    ``cu_seq_lens_q`` / ``max_length_q`` (used by the ``feedalign_varlen`` and flash-attention
    implementations, see ``policies.varlen``), and eager/SDPA attention derive the same
    block-diagonal causal mask from the restarting ``position_ids``. ``explicit_mask=True``
    passes ``collate.block_causal_mask`` instead (bool for sdpa, additive for eager); it costs
    ``S^2`` memory and does not apply to flash-attention.

    Returns:
        ``[N]`` fp32, N = number of packed examples.
    """
    from feedalign.data.collate import block_causal_mask
    from feedalign.policies.varlen import packed_attention_kwargs

    attention_mask = None
    attn_kwargs = None
    if explicit_mask:
        base = unwrap_model(model)
        impl = getattr(base.config, "_attn_implementation", "eager")
        if impl not in ("eager", "sdpa"):
            raise ValueError(f"packed_sequence_logps: explicit_mask needs eager or sdpa attention, not {impl!r}")
        dtype = torch.bool if impl == "sdpa" else next(base.parameters()).dtype
        attention_mask = block_causal_mask(packed["segment_ids"], dtype=dtype)
    else:
        max_seqlen = packed.get("max_seqlen")
        if max_seqlen is None:
            max_seqlen = int(packed["seq_lens"].max())
        attn_kwargs = packed_attention_kwargs(packed["cu_seqlens"], int(max_seqlen))
    logps, rows, cols = _completion_token_logps(
        model, packed["input_ids"], attention_mask, packed["completion_mask"], packed["position_ids"], chunk_size,
        head_as_module=head_as_module, attn_kwargs=attn_kwargs,
    )
    segments = packed["segment_ids"][:, 1:][rows, cols]
    out = torch.zeros(int(packed["seq_lens"].numel()), dtype=torch.float32, device=logps.device)
    return out.index_add(0, segments, logps)


def batch_logps(
    model: Any, batch: dict[str, Any], *, chunk_size: int = 1024, head_as_module: bool = False
) -> torch.Tensor:
    """Per-example log-probs of a padded (``pad_batch``), packed (``pack_examples``) or
    prompt-shared (``data.shared_prompt``) batch."""
    if "shared_spans" in batch:
        from feedalign.policies.shared_logps import shared_pair_logps

        return shared_pair_logps(model, batch, chunk_size=chunk_size, head_as_module=head_as_module)
    if "segment_ids" in batch:
        return packed_sequence_logps(model, batch, chunk_size=chunk_size, head_as_module=head_as_module)
    return sequence_logps(
        model,
        batch["input_ids"],
        batch.get("attention_mask"),
        batch["completion_mask"],
        chunk_size=chunk_size,
        position_ids=batch.get("position_ids"),
        head_as_module=head_as_module,
    )


def naive_sequence_logps(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    completion_mask: torch.Tensor,
    *,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference implementation: full ``[B, T, V]`` logits -> fp32 log_softmax -> gather ->
    masked sum. Same contract as ``sequence_logps``; memory-hungry, for tests."""
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).logits.float()
    token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (token_logps * completion_mask[:, 1:].float()).sum(-1)


def token_counts(completion_mask: torch.Tensor) -> torch.Tensor:
    """Number of scored (completion) tokens per sequence, ``[B]`` long."""
    return completion_mask.long().sum(-1)


# ----------------------------------------------------------------------------- generation


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], **options: Any) -> list[str]:
    """Sample one completion per prompt (text after the prompt, special tokens removed): the
    texts of ``policies.generation.sample``, which takes the same ``options`` (``max_new_tokens``,
    ``temperature``, ``top_p``, ``seed``, ``batch_size``, ``chat``, ``min_new_tokens``,
    ``suppress_tokens``) and also says which samples hit the length limit."""
    from feedalign.policies.generation import sample

    return [s.text for s in sample(model, tokenizer, prompts, **options)]
