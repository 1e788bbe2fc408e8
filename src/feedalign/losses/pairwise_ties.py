"""Tie-aware pair loss: DPO with the Rao-Kupper extension of Bradley-Terry (ALGORITHMS.md §17).

Chen et al. 2024, "On Extending Direct Preference Optimization to Accommodate Ties", arXiv
2409.17431 (DPO-RK); Rao & Kupper 1967. With d = beta * h (h = D(y_1|x) - D(y_2|x)) and a
tie threshold nu = log(theta) > 0:

    P(y_1 > y_2) = sigmoid(d - nu)
    P(tie)       = (e^{2 nu} - 1) / ((1 + e^{nu - d}) (1 + e^{nu + d}))

and the three outcomes' probabilities sum to one. The loss is -log of the observed outcome.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from feedalign.losses import _hparams as hp
from feedalign.losses._common import log_ratio, pair_metrics
from feedalign.losses.pairwise import implicit_reward_verdict
from feedalign.losses._registry import register_loss


@register_loss(
    "dpo_rk", feedback="pair", needs_reference=True, optional=("ties",),
    validators={"beta": hp.positive, "tie_log_theta": hp.positive}, accuracy=implicit_reward_verdict,
)
def dpo_rk_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor | None,
    reference_rejected_logps: Tensor | None,
    *,
    ties: Tensor | None = None,
    beta: float = 0.1,
    tie_log_theta: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO-RK: loss = softplus(nu - d) for a preference, and
    softplus(nu - d) + softplus(nu + d) - log(expm1(2 nu)) for a tie.

    Chen et al. 2024, arXiv 2409.17431, Eq. 9-11 (Rao-Kupper). d = beta * h. A tie's two
    completions are symmetric: swapping them leaves its loss unchanged. Without ties
    (``ties`` None or all False) and with nu -> 0 this is DPO.

    Args:
        policy_chosen_logps: [B] log pi_theta(y_1|x) (the preferred one, or either for a tie).
        policy_rejected_logps: [B] log pi_theta(y_2|x).
        reference_chosen_logps: [B] log pi_ref(y_1|x), or None (uniform reference).
        reference_rejected_logps: [B] log pi_ref(y_2|x), or None.
        ties: optional [B] bool, True where the two completions were judged equally good.
        beta: KL coefficient (> 0).
        tie_log_theta: nu = log(theta) > 0; larger means ties are likelier at a given margin.
    """
    chosen = beta * log_ratio(policy_chosen_logps, reference_chosen_logps)
    rejected = beta * log_ratio(policy_rejected_logps, reference_rejected_logps)
    d = chosen - rejected
    nu = float(tie_log_theta)
    win = F.softplus(nu - d)
    if ties is None:
        return win, pair_metrics(chosen, rejected)
    tie = win + F.softplus(nu + d) - math.log(math.expm1(2.0 * nu))
    ties = ties.to(device=d.device, dtype=torch.bool)
    losses = torch.where(ties, tie, win)
    metrics = pair_metrics(chosen, rejected)
    metrics["ties/fraction"] = ties.float().mean()
    return losses, metrics


def rao_kupper_probabilities(d: Tensor, tie_log_theta: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(P(y_1 > y_2), P(tie), P(y_2 > y_1))`` at margin ``d`` (for tests and reports)."""
    nu = float(tie_log_theta)
    win, lose = torch.sigmoid(d - nu), torch.sigmoid(-d - nu)
    tie = torch.exp(math.log(math.expm1(2.0 * nu)) - F.softplus(nu - d) - F.softplus(nu + d))
    return win, tie, lose


def rao_kupper_optimum(wins: float, losses: float, ties: float, tie_log_theta: float) -> float:
    """The margin d* minimising the expected DPO-RK loss for outcome frequencies
    (wins, losses, ties): the positive root u = e^{d*} of
    (losses + ties) u^2 + theta (losses - wins) u - (wins + ties) = 0 (ALGORITHMS.md §17)."""
    theta = math.exp(tie_log_theta)
    a, b = losses + ties, theta * (losses - wins)
    c = -(wins + ties)
    u = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return math.log(u)
