"""Multi-objective losses: MODPO (docs/ALGORITHMS.md §10)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from feedalign.losses import _hparams as hp
from feedalign.losses._common import log_ratio, pair_metrics
from feedalign.losses._registry import register_loss
from feedalign.losses._state import MarginRewards
from feedalign.losses.pairwise import implicit_reward_verdict


def _as_weights(value: float | Sequence[float] | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


@register_loss(
    "modpo", feedback="pair", needs_reference=True, state={"margins": MarginRewards},
    validators={"beta": hp.positive, "weight": hp.real(0.0, 1.0, lo_open=True),
                "margin_weights": hp.real_vector(hp.nonnegative), "scale_by_weight": hp.flag},
    accuracy=implicit_reward_verdict,
)
def modpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor | None,
    reference_rejected_logps: Tensor | None,
    *,
    chosen_margins: Tensor,
    rejected_margins: Tensor,
    beta: float = 0.1,
    weight: float | Tensor = 0.5,
    margin_weights: Sequence[float] | Tensor = (0.5,),
    scale_by_weight: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """MODPO: loss = -logsigmoid( (beta*h - w_{-k}.(m(y_w) - m(y_l))) / w_k ).

    Zhou et al. 2023, "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct
    Preference Optimization", arXiv 2310.03708, Eq. 8. The pairs are labelled for objective k;
    m are the (detached) margin rewards of the other objectives in reward units. With BT(r_k)
    labels and exact margins the optimum is pi* ∝ pi_ref*exp((w_k*r_k + w_{-k}.r_{-k})/beta).

    Args:
        chosen_margins, rejected_margins: [B, m-1] (or [B] for m = 2) margin rewards.
        weight: w_k > 0, a float or a per-example tensor [B] (steerable training).
        margin_weights: w_{-k}, a sequence of m-1 floats or a per-example tensor [B, m-1].
        scale_by_weight: multiply each example's loss by its w_k. It leaves each weight's
            minimiser unchanged and keeps examples with small w_k (whose logits are divided
            by w_k) from dominating the gradient when weights vary per example (steering).
    """
    if chosen_margins.dim() == 1:
        chosen_margins, rejected_margins = chosen_margins[:, None], rejected_margins[:, None]
    w_k = _as_weights(weight, policy_chosen_logps)
    w_rest = _as_weights(margin_weights, policy_chosen_logps)
    if torch.any(w_k <= 0):
        raise ValueError("modpo weight w_k must be > 0 (the objective whose pairs are trained)")
    margin_diff = (chosen_margins - rejected_margins).detach()
    margin_term = (margin_diff * w_rest).sum(dim=-1)
    chosen = beta * log_ratio(policy_chosen_logps, reference_chosen_logps)
    rejected = beta * log_ratio(policy_rejected_logps, reference_rejected_logps)
    logits = (chosen - rejected - margin_term) / w_k
    losses = -F.logsigmoid(logits)
    if scale_by_weight:
        losses = w_k * losses
    metrics = pair_metrics(chosen, rejected)
    metrics["margins/other_objectives"] = margin_term.detach().mean()
    return losses, metrics
