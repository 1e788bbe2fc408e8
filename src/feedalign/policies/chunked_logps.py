"""Log-probabilities of target tokens through a linear LM head, chunked over tokens.

Given final hidden states ``h`` ``[N, H]`` (one row per scored token), the LM head weight
``W`` ``[V, H]`` (optional bias ``b`` ``[V]``) and target ids ``y`` ``[N]``::

    z_n      = cap * tanh(scale * (W h_n + b) / cap)      (softcap optional; cap=None: z = scale*(W h + b))
    logp_n   = z_n[y_n] - logsumexp_v z_n[v]              (fp32)

Only ``chunk_size`` rows of fp32 logits ``[chunk, V]`` exist at any time, in the forward and
in the backward pass. Why a custom autograd Function instead of ``torch.utils.checkpoint``
around each chunk: checkpointing would keep nothing either, but its backward recomputes the
chunk through autograd, which holds the bf16 logits, their fp32 copy, the log-softmax output
and its gradient at once (~4 ``[chunk, V]`` buffers). Here the backward recomputes the logits
once and turns them into the gradient in place (``softmax - onehot``), i.e. ~1-2 buffers,
and it skips the ``[V, H]`` weight gradient entirely when the head is frozen (LoRA). The
forward saves only the per-row logsumexp (``[N]`` fp32).

The matmul runs in the weight's dtype (bf16 models: bf16 inputs, fp32 accumulation on GPU)
and its result is upcast to fp32 before the softmax, which is what the unchunked
``model(...).logits.float()`` path computes as well. Weight/bias gradients are accumulated
chunk by chunk in the weight's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _head_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    softcap: float | None,
) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    if scale != 1.0:
        logits.mul_(scale)
    if softcap is not None:
        logits.div_(softcap).tanh_().mul_(softcap)
    return logits


class _LinearTargetLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, scale, softcap):  # type: ignore[override]
        n = hidden.shape[0]
        logps = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            logits = _head_logits(hidden[start:stop], weight, bias, scale, softcap)
            lse[start:stop] = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, targets[start:stop, None]).squeeze(1)
            logps[start:stop] = picked - lse[start:stop]
            del logits
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size, ctx.scale, ctx.softcap = chunk_size, scale, softcap
        return logps

    @staticmethod
    def backward(ctx, grad_logps):  # type: ignore[override]
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        chunk_size, scale, softcap = ctx.chunk_size, ctx.scale, ctx.softcap
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        grad_bias = torch.zeros_like(bias) if need_bias and bias is not None else None
        grad_logps = grad_logps.float()
        for start in range(0, hidden.shape[0], chunk_size):
            stop = min(start + chunk_size, hidden.shape[0])
            h = hidden[start:stop]
            g = grad_logps[start:stop]
            logits = _head_logits(h, weight, bias, scale, softcap)
            # d logp / d z = onehot(y) - softmax(z); built in place in the logits buffer.
            squash = 1.0 - (logits / softcap).square_() if softcap is not None else None
            grad_z = logits.sub_(lse[start:stop, None]).exp_().mul_(-g[:, None])
            rows = torch.arange(stop - start, device=h.device)
            grad_z[rows, targets[start:stop]] += g
            if squash is not None:  # d(cap*tanh(u/cap))/du = 1 - tanh^2
                grad_z.mul_(squash)
                del squash
            if scale != 1.0:
                grad_z.mul_(scale)
            grad_raw = grad_z.to(weight.dtype)
            del logits, grad_z
            if grad_hidden is not None:
                grad_hidden[start:stop] = grad_raw @ weight
            if grad_weight is not None:
                grad_weight.addmm_(grad_raw.t(), h.to(weight.dtype))
            if grad_bias is not None:
                grad_bias.add_(grad_raw.sum(0).to(grad_bias.dtype))
        return grad_hidden, grad_weight, grad_bias, None, None, None, None


def linear_target_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    chunk_size: int = 1024,
    scale: float = 1.0,
    softcap: float | None = None,
    fused_frozen_head: bool = True,
) -> torch.Tensor:
    """``log softmax(head(hidden))[target]`` per row, chunked; differentiable w.r.t. hidden,
    weight and bias.

    Args:
        hidden: ``[N, H]`` final hidden states (any float dtype).
        weight: ``[V, H]`` LM head weight (tied embeddings: the embedding matrix).
        bias: ``[V]`` or None.
        targets: ``[N]`` long, the token whose log-prob is wanted for each row.
        chunk_size: rows of ``[chunk, V]`` fp32 logits materialised at once.
        scale: multiplies the logits before the softcap (Cohere ``logit_scale``,
            Granite ``1 / logits_scaling``).
        softcap: Gemma-2 style ``final_logit_softcapping`` or None.
        fused_frozen_head: with a frozen head (weight and bias need no gradient) form the
            hidden-state gradient in the forward (``policies.fused_logps``: two head
            products per chunk instead of three); False recomputes in the backward.

    Returns:
        ``[N]`` fp32 log-probs.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"expected hidden [N, H] and targets [N], got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    needs_graph = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    if not needs_graph:
        with torch.no_grad():
            return _LinearTargetLogProb.forward(_NoCtx(), hidden, weight, bias, targets, chunk_size, scale, softcap)
    if fused_frozen_head and not any(t is not None and t.requires_grad for t in (weight, bias)):
        # Frozen head: the hidden-state gradient is formed in the forward (policies.fused_logps).
        from feedalign.policies.fused_logps import FrozenHeadTargetLogProb

        return FrozenHeadTargetLogProb.apply(hidden, weight, bias, targets, chunk_size, scale, softcap)
    return _LinearTargetLogProb.apply(hidden, weight, bias, targets, chunk_size, scale, softcap)


class _NoCtx:
    """Stand-in autograd context for inference (nothing is saved)."""

    def save_for_backward(self, *tensors: torch.Tensor | None) -> None:
        pass


def module_target_logps(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    *,
    chunk_size: int = 1024,
    scale: float = 1.0,
    softcap: float | None = None,
) -> torch.Tensor:
    """Same as ``linear_target_logps`` for an arbitrary head module (e.g. a LoRA-wrapped
    ``lm_head``), each chunk under non-reentrant activation checkpointing so that its fp32
    logits are recomputed in backward instead of stored."""
    from torch.utils.checkpoint import checkpoint

    def chunk_logps(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = head(h).float()
        if scale != 1.0:
            logits = logits * scale
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        return logits.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)

    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(chunk_logps, h, y, use_reentrant=False))
        else:
            pieces.append(chunk_logps(h, y))
    if not pieces:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(pieces)
