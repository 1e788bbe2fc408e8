"""Reward-model losses: Bradley-Terry on pairs, BCE on thumbs (docs/ALGORITHMS.md §2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from collections.abc import Mapping
from typing import Any

from feedalign.losses import _hparams as hp
from feedalign.losses._common import labeled_metrics, labeled_verdict, pair_metrics, pair_verdict
from feedalign.losses._registry import register_loss


def _reward_pair_verdict(inputs: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """Correct iff r(chosen) > r(rejected)."""
    return pair_verdict(inputs["chosen_rewards"], inputs["rejected_rewards"])


def _reward_label_verdict(inputs: Mapping[str, Any]) -> tuple[Tensor, None]:
    """Correct iff sign(r) agrees with the thumb."""
    return labeled_verdict(inputs["rewards"], inputs["labels"])


@register_loss("bt_reward", feedback="reward_pair", needs_reference=False, accuracy=_reward_pair_verdict,
               validators={"margin": hp.finite, "center_coef": hp.nonnegative})
def bt_reward_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    *,
    margin: float = 0.0,
    center_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Bradley-Terry: loss = -logsigmoid(r_w - r_l - margin) + center_coef*(r_w + r_l)^2.

    Bradley & Terry 1952; as used for RLHF reward models (Ouyang et al. 2022, arXiv
    2203.02155). The optional centering penalty (c = 0.01 in arXiv 2312.09244) pins the
    per-prompt offset the BT likelihood leaves free.
    """
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - margin)
    if center_coef:
        losses = losses + center_coef * (chosen_rewards + rejected_rewards) ** 2
    return losses, pair_metrics(chosen_rewards, rejected_rewards)


@register_loss("bce_reward", feedback="reward_unpaired", needs_reference=False, accuracy=_reward_label_verdict,
               validators={"positive_weight": hp.positive})
def bce_reward_loss(
    rewards: Tensor,
    labels: Tensor,
    *,
    positive_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """BCE on thumbs: loss = -w+*u*logsigmoid(f) - (1-u)*logsigmoid(-f).

    Model P(u=1|x,y) = sigma(r(x,y) - c(x)); at the population optimum f = r - c(x)
    (+ log positive_weight), offsets that cancel in pi* (ALGORITHMS.md §2.2).
    """
    u = labels.to(rewards.dtype)
    losses = -positive_weight * u * F.logsigmoid(rewards) - (1 - u) * F.logsigmoid(-rewards)
    return losses, labeled_metrics(rewards, labels.bool())

