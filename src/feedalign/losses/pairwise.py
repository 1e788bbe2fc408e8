"""Pairwise preference losses: DPO, IPO, cDPO, rDPO.

All take per-sequence log-probs of shape [B] (sums over completion tokens, fp32) and return
``(per_example_loss [B], metrics)``. Notation (docs/ALGORITHMS.md §0):
D(y|x) = logp_theta(y|x) - logp_ref(y|x),  h = D(y_w|x) - D(y_l|x).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from feedalign.losses._common import log_ratio, pair_metrics
from feedalign.losses._registry import register_loss


def _implicit_rewards(pc, pr, rc, rr, beta):
    chosen = beta * log_ratio(pc, rc)
    rejected = beta * log_ratio(pr, rr)
    return chosen, rejected


@register_loss("dpo", feedback="pair", needs_reference=True)
def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor | None,
    reference_rejected_logps: Tensor | None,
    *,
    beta: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO: loss = -logsigmoid(beta * h).

    Rafailov et al. 2023, "Direct Preference Optimization", arXiv 2305.18290, Eq. 7.
    With Bradley-Terry labels on r and covering pairs the population optimum is
    pi* ∝ pi_ref * exp(r / beta). A ``None`` reference means a uniform reference
    (the "reference-free" variant).

    Args:
        policy_chosen_logps: [B] log pi_theta(y_w|x).
        policy_rejected_logps: [B] log pi_theta(y_l|x).
        reference_chosen_logps: [B] log pi_ref(y_w|x), or None.
        reference_rejected_logps: [B] log pi_ref(y_l|x), or None.
        beta: KL coefficient (> 0).
    """
    chosen, rejected = _implicit_rewards(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    losses = -F.logsigmoid(chosen - rejected)
    return losses, pair_metrics(chosen, rejected)


@register_loss("ipo", feedback="pair", needs_reference=True)
def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor | None,
    reference_rejected_logps: Tensor | None,
    *,
    beta: float = 0.1,
    length_normalize: bool = False,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """IPO: loss = (h - 1/(2*tau))^2, with tau = ``beta``.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", arXiv 2310.12036, Eq. 17. Target: pi ∝ pi_ref * exp(P(y > mu) / tau), where
    mu is the distribution that produced the pairs; it does not recover pi_ref*exp(r/beta).

    Units (ALGORITHMS.md §5, §15.3): by default h uses sequence sums (as the paper's
    reference code); ``length_normalize=True`` divides each log-ratio by its completion token
    count first (requires ``chosen_lengths`` and ``rejected_lengths``, shape [B]).
    """
    d_chosen = log_ratio(policy_chosen_logps, reference_chosen_logps)
    d_rejected = log_ratio(policy_rejected_logps, reference_rejected_logps)
    if length_normalize:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("ipo with length_normalize=True needs chosen_lengths and rejected_lengths")
        d_chosen = d_chosen / chosen_lengths.clamp(min=1)
        d_rejected = d_rejected / rejected_lengths.clamp(min=1)
    h = d_chosen - d_rejected
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return losses, pair_metrics(beta * d_chosen, beta * d_rejected)


def _check_flip_rate(hparams: dict[str, Any]) -> list[str]:
    eps = hparams["epsilon"]
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"epsilon (label flip rate) must be in [0, 0.5), got {eps}")
    return []


@register_loss("cdpo", feedback="pair", needs_reference=True, check=_check_flip_rate)
def cdpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor | None,
    reference_rejected_logps: Tensor | None,
    *,
    beta: float = 0.1,
    epsilon: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Conservative DPO: loss = -(1-eps)*logsigmoid(beta*h) - eps*logsigmoid(-beta*h).

    E. Mitchell, "A note on DPO with noisy preferences & relationship to IPO" (2023).
    The gradient vanishes at sigma(beta*h) = 1 - eps: the target is a shrunk preference,
    not pi* even when eps is the true flip rate (ALGORITHMS.md §6.1).
    """
    chosen, rejected = _implicit_rewards(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    logits = chosen - rejected
    losses = -(1.0 - epsilon) * F.logsigmoid(logits) - epsilon * F.logsigmoid(-logits)
    return losses, pair_metrics(chosen, rejected)


@register_loss("rdpo", feedback="pair", needs_reference=True, check=_check_flip_rate)
def rdpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor | None,
    reference_rejected_logps: Tensor | None,
    *,
    beta: float = 0.1,
    epsilon: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Robust DPO: loss = [(1-eps)*l(h) - eps*l(-h)] / (1 - 2*eps), l(h) = -logsigmoid(beta*h).

    Chowdhury et al. 2024, "Provably Robust DPO", arXiv 2403.00409, Eq. 9. Unbiased: the
    expectation over label flips (rate eps) equals the clean DPO loss, so with the true eps
    the population minimizer is DPO's, pi* under BT. Per example it is unbounded below
    (≈ -eps*beta*h/(1-2eps) for large h); watch held-out loss.
    """
    chosen, rejected = _implicit_rewards(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    logits = chosen - rejected
    losses = (-(1.0 - epsilon) * F.logsigmoid(logits) + epsilon * F.logsigmoid(-logits)) / (
        1.0 - 2.0 * epsilon
    )
    return losses, pair_metrics(chosen, rejected)
