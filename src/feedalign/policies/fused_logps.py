"""Target log-probs through a FROZEN linear LM head, the gradient computed in the forward.

With a frozen head (LoRA, or any run that trains the body only) the only gradient needed is
the one with respect to the hidden states, and it is a per-row vector::

    d logp_n / d h_n = scale * W^T ((onehot(y_n) - softmax(z_n)) * dz/du)      [H]

so it can be formed while the chunk's logits are at hand (Liger's fused linear
cross-entropy idea) and the backward only scales it by the incoming gradient. Per chunk this
costs two ``[chunk, V] x [V, H]`` products in the forward and none in the backward, where
``chunked_logps.linear_target_logps`` does one in the forward and recomputes the logits plus
one product in the backward (three in all). It keeps ``[N, H]`` (the size of the hidden
states themselves) instead of ``[N]``. Never more than ``chunk_size`` rows of ``[chunk, V]``
fp32 logits exist. ``chunked_logps.linear_target_logps`` picks this path by itself for a frozen
head under autograd.
"""

from __future__ import annotations

import torch

from feedalign.policies.chunked_logps import _head_logits


class FrozenHeadTargetLogProb(torch.autograd.Function):
    """``(hidden [N, H], weight [V, H], bias [V] | None, targets [N]) -> logps [N]`` with the
    gradient reaching ``hidden`` only (weight and bias must not require grad)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, scale, softcap):  # type: ignore[override]
        n = hidden.shape[0]
        logps = torch.empty(n, dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            logits = _head_logits(hidden[start:stop], weight, bias, scale, softcap)
            lse = torch.logsumexp(logits, dim=-1)
            y = targets[start:stop]
            rows = torch.arange(stop - start, device=hidden.device)
            logps[start:stop] = logits[rows, y] - lse
            squash = 1.0 - (logits / softcap).square_() if softcap is not None else None
            grad_z = logits.sub_(lse[:, None]).exp_().neg_()  # -softmax, in the logits buffer
            grad_z[rows, y] += 1.0
            if squash is not None:
                grad_z.mul_(squash)
                del squash
            if scale != 1.0:
                grad_z.mul_(scale)
            grad_hidden[start:stop] = grad_z.to(weight.dtype) @ weight
            del logits, grad_z
        ctx.save_for_backward(grad_hidden)
        return logps

    @staticmethod
    def backward(ctx, grad_logps):  # type: ignore[override]
        (grad_hidden,) = ctx.saved_tensors
        grad = grad_hidden * grad_logps.to(grad_hidden.dtype)[:, None]
        return grad, None, None, None, None, None, None


def frozen_head_target_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    chunk_size: int = 1024,
    scale: float = 1.0,
    softcap: float | None = None,
) -> torch.Tensor:
    """``log softmax(head(hidden))[target]`` per row ``[N]`` fp32, differentiable w.r.t.
    ``hidden`` only; arguments as ``chunked_logps.linear_target_logps``."""
    if any(t is not None and t.requires_grad for t in (weight, bias)):
        raise ValueError("frozen_head_target_logps: the head weight and bias must not require grad")
    return FrozenHeadTargetLogProb.apply(hidden, weight, bias, targets, chunk_size, scale, softcap)
