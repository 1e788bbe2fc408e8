"""Variable-length attention for padding-free (packed) batches.

A packed batch is one row holding several sequences back to back (``data.collate.pack_examples``);
each sequence must attend only to itself. transformers' own ``sdpa`` and ``eager``
implementations get this right by building a block-diagonal ``[S, S]`` mask from the
restarting ``position_ids``, which costs ``S^2`` memory and computes every masked block.
The ``feedalign_varlen`` implementation registered here instead runs attention per sequence:

* on CUDA in bf16/fp16, torch's flash-attention variable-length kernel
  (``torch.nn.attention.varlen.varlen_attn``) with the cumulative lengths ``cu_seq_lens_q``;
* elsewhere (CPU, fp32), causal ``scaled_dot_product_attention`` on each sequence in turn.

The packed call passes ``cu_seq_lens_q`` / ``cu_seq_lens_k`` / ``max_length_q`` /
``max_length_k`` as model keyword arguments (transformers forwards them to the attention
function; flash-attention implementations read the same names). A call WITHOUT them (a
padded batch, generation with a KV cache) is handed to transformers' SDPA function with the
usual mask, so a model loaded with this implementation still does everything else.

A prompt-shared row (``data.shared_prompt``) comes with ``shared_key_index`` /
``shared_cu_q`` / ``shared_cu_k``: query segment ``j`` (contiguous in the row) attends the
keys at ``shared_key_index[cu_k[j]:cu_k[j+1]]`` with bottom-right aligned causality (the last
query sees every key), which is how a rejected completion sees its pair's prompt but not the
chosen completion. It runs per segment with SDPA on every device (on CUDA too: the
variable-length kernel would need gathered keys and bottom-right alignment, which has not
been checked on a GPU here).

Caveat: a packed row given without ``cu_seq_lens_q`` would attend across sequences; every
packed call in feedalign goes through ``policies.hf.packed_sequence_logps``, which passes them.
"""

from __future__ import annotations

import inspect
import logging
from functools import lru_cache
from typing import Any

import torch

VARLEN_ATTENTION = "feedalign_varlen"
logger = logging.getLogger(__name__)
_warned: set[str] = set()


def register() -> str:
    """Register ``feedalign_varlen`` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention)
    AttentionMaskInterface.register(VARLEN_ATTENTION, _varlen_mask)
    return VARLEN_ATTENTION


def packed_attention_kwargs(cu_seqlens: torch.Tensor, max_seqlen: int) -> dict[str, Any]:
    """The model keyword arguments that describe a packed row's sequences."""
    cu = cu_seqlens.to(torch.int32)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": int(max_seqlen), "max_length_k": int(max_seqlen)}


def _varlen_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
    """No mask for unpadded causal calls (packed rows are split by ``cu_seq_lens``); the
    SDPA mask when there is padding or a cache offset."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and kwargs.get("q_offset", 0) == 0 and kwargs.get("kv_offset", 0) == 0:
        q_length = kwargs.get("q_length", args[1] if len(args) > 1 else None)
        kv_length = kwargs.get("kv_length", args[2] if len(args) > 2 else None)
        if q_length == kv_length:
            return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: query ``[1, H, S, D]``, key/value ``[1, Hkv, S, D]``
    -> ``[1, S, H, D]``. Without ``cu_seq_lens_q`` it is transformers' SDPA attention."""
    if kwargs.get("shared_key_index") is not None:
        _check_packed_call(query, dropout, kwargs)
        return _shared_segments(query, key, value, kwargs, scaling), None
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    _check_packed_call(query, dropout, kwargs)
    max_length = kwargs.get("max_length_q")
    kernel = _cuda_kernel() if query.is_cuda and query.dtype in (torch.bfloat16, torch.float16) else None
    if kernel is not None and max_length is not None:
        return _flash_varlen(kernel, query, key, value, cu.to(torch.int32), int(max_length), scaling), None
    if query.is_cuda:
        _warn_once("fallback", f"{VARLEN_ATTENTION}: no flash variable-length kernel for this device/dtype; "
                   "attending sequence by sequence (slower)")
    return _per_sequence(query, key, value, cu.tolist(), scaling), None


def _check_packed_call(query: torch.Tensor, dropout: float, kwargs: dict[str, Any]) -> None:
    if query.shape[0] != 1:
        raise ValueError(f"{VARLEN_ATTENTION}: a packed batch is one row, got {query.shape[0]} rows")
    if kwargs.get("sliding_window") is not None:
        raise NotImplementedError(f"{VARLEN_ATTENTION}: sliding-window attention is not supported")
    if dropout:
        raise NotImplementedError(f"{VARLEN_ATTENTION}: attention dropout is not supported (got {dropout})")


def shared_attention_kwargs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model keyword arguments that describe a prompt-shared row's segments."""
    return {name: batch[name] for name in ("shared_key_index", "shared_cu_q", "shared_cu_k")}


def _shared_segments(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kwargs: dict[str, Any], scaling: float | None
) -> torch.Tensor:
    """Per-segment SDPA over gathered keys, bottom-right causal -> ``[1, S, H, D]``."""
    index = kwargs["shared_key_index"].to(key.device)
    keys, values = key.index_select(2, index), value.index_select(2, index)
    cu_q, cu_k = kwargs["shared_cu_q"].tolist(), kwargs["shared_cu_k"].tolist()
    gqa = query.shape[1] != key.shape[1]
    pieces = []
    for qa, qb, ka, kb in zip(cu_q[:-1], cu_q[1:], cu_k[:-1], cu_k[1:]):
        lq, lk = qb - qa, kb - ka
        mask = None
        if lq != lk:  # the last query sees every key: keys before the segment are all visible
            mask = torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril(diagonal=lk - lq)
        pieces.append(torch.nn.functional.scaled_dot_product_attention(
            query[:, :, qa:qb], keys[:, :, ka:kb], values[:, :, ka:kb], attn_mask=mask,
            is_causal=mask is None, scale=scaling, enable_gqa=gqa,
        ))
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous()


def _per_sequence(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bounds: list[int], scaling: float | None
) -> torch.Tensor:
    gqa = query.shape[1] != key.shape[1]
    pieces = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling, enable_gqa=gqa
        )
        for a, b in zip(bounds[:-1], bounds[1:])
        if b > a
    ]
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous()


def _flash_varlen(
    kernel: tuple[Any, frozenset[str]], query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    cu: torch.Tensor, max_length: int, scaling: float | None,
) -> torch.Tensor:
    fn, params = kernel
    groups = query.shape[1] // key.shape[1]
    extra: dict[str, Any] = {}
    if groups > 1:
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    # torch releases name causality differently: window_size=(-1, 0) or is_causal=True.
    extra.update({"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True})
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [S, H, D]
    out = fn(q, k, v, cu, cu, max_length, max_length, scale=scaling, **extra)
    return out[None]


@lru_cache(maxsize=1)
def _cuda_kernel() -> tuple[Any, frozenset[str]] | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)
