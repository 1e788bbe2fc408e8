"""Pairwise preference losses: DPO, IPO, cDPO, rDPO.

All take per-sequence log-probs of shape [B] (sums over completion tokens, fp32) and return
``(per_example_loss [B], metrics)``. Notation (docs/ALGORITHMS.md §0):
D(y|x) = logp_theta(y|x) - logp_ref(y|x),  h = D(y_w|x) - D(y_l|x).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from feedalign.losses import _hparams as hp
from feedalign.losses._common import log_ratio, pair_metrics, pair_verdict
from feedalign.losses._registry import register_loss


def _implicit_rewards(pc, pr, rc, rr, beta):
    chosen = beta * log_ratio(pc, rc)
    rejected = beta * log_ratio(pr, rr)
    return chosen, rejected


def implicit_reward_verdict(inputs: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """Reward accuracy of a pair loss with implicit reward beta*D: correct iff
    beta*(D(y_w) - D(y_l)) > 0; the margin is that difference."""
    return pair_verdict(*_implicit_rewards(
        inputs["policy_chosen_logps"], inputs["policy_rejected_logps"],
        inputs["reference_chosen_logps"], inputs["reference_rejected_logps"], inputs["beta"],
    ))


def _ipo_verdict(inputs: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    d_chosen, d_rejected = _ipo_log_ratios(**inputs)
    return pair_verdict(inputs["beta"] * d_chosen, inputs["beta"] * d_rejected)


BETA = {"beta": hp.positive}


@register_loss("dpo", feedback="pair", needs_reference=True, validators=BETA, accuracy=implicit_reward_verdict)
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


def _ipo_log_ratios(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                    *, length_normalize=False, chosen_lengths=None, rejected_lengths=None, **_):
    d_chosen = log_ratio(policy_chosen_logps, reference_chosen_logps)
    d_rejected = log_ratio(policy_rejected_logps, reference_rejected_logps)
    if length_normalize:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("ipo with length_normalize=True needs chosen_lengths and rejected_lengths")
        d_chosen = d_chosen / chosen_lengths.clamp(min=1)
        d_rejected = d_rejected / rejected_lengths.clamp(min=1)
    return d_chosen, d_rejected


@register_loss("ipo", feedback="pair", needs_reference=True, optional=("chosen_lengths", "rejected_lengths"),
               validators={**BETA, "length_normalize": hp.flag}, accuracy=_ipo_verdict)
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
    d_chosen, d_rejected = _ipo_log_ratios(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
        length_normalize=length_normalize, chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths,
    )
    h = d_chosen - d_rejected
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return losses, pair_metrics(beta * d_chosen, beta * d_rejected)


NOISY = {**BETA, "epsilon": hp.flip_rate}  # epsilon: the label flip rate


@register_loss("cdpo", feedback="pair", needs_reference=True, validators=NOISY, accuracy=implicit_reward_verdict)
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
    The gradient vanishes at sigma(beta*h) = 1 - eps: per pair the target is a shrunk
    preference, not pi* even when eps is the true flip rate; that per-pair value is the
    population optimum only for K = 2 responses per prompt (ALGORITHMS.md §6.1).
    """
    chosen, rejected = _implicit_rewards(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    logits = chosen - rejected
    losses = -(1.0 - epsilon) * F.logsigmoid(logits) - epsilon * F.logsigmoid(-logits)
    return losses, pair_metrics(chosen, rejected)


@register_loss("rdpo", feedback="pair", needs_reference=True, validators=NOISY, accuracy=implicit_reward_verdict)
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
