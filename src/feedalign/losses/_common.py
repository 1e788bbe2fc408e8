"""Small helpers shared by the loss modules (metrics, log-ratios)."""

from __future__ import annotations

import torch
from torch import Tensor


def log_ratio(policy_logps: Tensor, reference_logps: Tensor | None) -> Tensor:
    """D(y|x) = logp_theta - logp_ref; a missing reference means a uniform one (D = logp_theta)."""
    if reference_logps is None:
        return policy_logps
    return policy_logps - reference_logps


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is True; NaN when nothing is selected. Shape-static
    (no boolean indexing), so it needs no device-to-host read."""
    picked = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return picked.sum() / mask.sum().to(values.dtype)


def pair_verdict(chosen_rewards: Tensor, rejected_rewards: Tensor) -> tuple[Tensor, Tensor]:
    """Per pair (correct = reward margin > 0, margin), detached."""
    margins = (chosen_rewards - rejected_rewards).detach()
    return margins > 0, margins


def labeled_verdict(rewards: Tensor, labels: Tensor, threshold: Tensor | float = 0.0) -> tuple[Tensor, None]:
    """Per example: correct iff (reward > threshold) agrees with the label."""
    rewards = rewards.detach()
    threshold = torch.as_tensor(threshold, dtype=rewards.dtype, device=rewards.device).detach()
    return (rewards > threshold) == labels.bool(), None


def pair_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, Tensor]:
    """Batch means of implicit rewards, margins and preference accuracy (all detached)."""
    chosen = chosen_rewards.detach()
    rejected = rejected_rewards.detach()
    margins = chosen - rejected
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margins": margins.mean(),
        "rewards/accuracies": pair_verdict(chosen, rejected)[0].float().mean(),
    }


def labeled_metrics(rewards: Tensor, labels: Tensor, threshold: Tensor | float = 0.0) -> dict[str, Tensor]:
    """Mean implicit reward per class and accuracy of sign(reward - threshold) against labels."""
    rewards = rewards.detach()
    labels = labels.bool()
    return {
        "rewards/desirable": masked_mean(rewards, labels),
        "rewards/undesirable": masked_mean(rewards, ~labels),
        "rewards/accuracies": labeled_verdict(rewards, labels, threshold)[0].float().mean(),
    }
