"""Losses on unpaired feedback: SFT (positives), KTO, BCO, PMPO.

``labels`` is a bool tensor [B]: True = desirable / thumbs up / accepted.
D(y|x) = logp_theta(y|x) - logp_ref(y|x) (docs/ALGORITHMS.md §0).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from feedalign.losses._common import labeled_metrics, log_ratio, masked_mean
from feedalign.losses._registry import register_loss


@register_loss("sft", feedback="sequence", needs_reference=False)
def sft_loss(
    policy_logps: Tensor,
    *,
    length_normalize: bool = False,
    lengths: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SFT: loss = -logp_theta(y|x) on positive demonstrations (ALGORITHMS.md §3).

    Sequence-sum by default, the unit the other losses use. ``length_normalize=True`` divides
    by ``lengths`` [B] (completion token counts): a per-sequence token mean.
    Target: the data distribution; on accepted samples of pi_ref, q+ ∝ pi_ref * P(u=1|x,y).
    """
    losses = -policy_logps
    if length_normalize:
        if lengths is None:
            raise ValueError("sft with length_normalize=True needs lengths")
        losses = losses / lengths.clamp(min=1)
    return losses, {"logps": policy_logps.detach().mean()}


@register_loss("kto", feedback="unpaired", needs_reference=True, state=("kl_ref",))
def kto_loss(
    policy_logps: Tensor,
    reference_logps: Tensor | None,
    labels: Tensor,
    *,
    kl_ref: Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """KTO: loss = lambda_D*(1 - sigma(beta*(rho - z))) if u else lambda_U*(1 - sigma(beta*(z - rho))).

    Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization",
    arXiv 2402.01306, Eq. 8 (numbering differs between versions). rho = D(y|x) (not scaled
    by beta); z = max(0, kl_ref) is the reference point, detached here whatever the caller
    passes. The caller estimates ``kl_ref`` as the mean log-ratio on mismatched (x_i, y_j)
    pairs of the micro-batch. No closed-form optimum: for an example with P(u=1) = p the
    expected gradient sign follows lambda_D*p vs lambda_U*(1-p) (ALGORITHMS.md §7).
    """
    z = torch.as_tensor(kl_ref, dtype=policy_logps.dtype, device=policy_logps.device).detach().clamp(min=0)
    rho = log_ratio(policy_logps, reference_logps)
    labels = labels.bool()
    desirable = desirable_weight * (1.0 - torch.sigmoid(beta * (rho - z)))
    undesirable = undesirable_weight * (1.0 - torch.sigmoid(beta * (z - rho)))
    losses = torch.where(labels, desirable, undesirable)
    metrics = labeled_metrics(beta * rho, labels, beta * z)
    metrics["kl_ref"] = z
    return losses, metrics


# KTO paper, §4 ("Data imbalance"): keep lambda_D * n_D / (lambda_U * n_U) in [1, 4/3].
KTO_WEIGHT_RATIO = (1.0, 4.0 / 3.0)


def kto_class_weights(n_desirable: int, n_undesirable: int) -> dict[str, float]:
    """Desirable / undesirable weights from the class counts (ALGORITHMS.md §7).

    Ethayarajh et al. 2024 recommend lambda_D*n_D / (lambda_U*n_U) in [1, 4/3]. The majority
    class keeps weight 1 and the minority class is scaled to the nearest end of that range:
    more undesirable than desirable examples -> lambda_D = n_U/n_D (ratio 1); more than 4/3
    desirable per undesirable -> lambda_U = (n_D/n_U) / (4/3) (ratio 4/3); in between both 1.
    Empty when a class is missing (no ratio to correct).
    """
    if n_desirable <= 0 or n_undesirable <= 0:
        return {}
    ratio = n_desirable / n_undesirable
    low, high = KTO_WEIGHT_RATIO
    if ratio < low:
        return {"desirable_weight": low / ratio, "undesirable_weight": 1.0}
    if ratio > high:
        return {"desirable_weight": 1.0, "undesirable_weight": ratio / high}
    return {"desirable_weight": 1.0, "undesirable_weight": 1.0}


_CLASS_WEIGHT_RULES = {"kto": kto_class_weights, "bco": kto_class_weights}


def class_weight_hparams(loss: str, n_desirable: int, n_undesirable: int) -> dict[str, float]:
    """Hyperparameters that balance a loss's classes given their counts ({} for a loss with
    no class weights). The trainer applies those the user did not set."""
    rule = _CLASS_WEIGHT_RULES.get(loss)
    return rule(n_desirable, n_undesirable) if rule is not None else {}


@register_loss("bco", feedback="unpaired", needs_reference=True, state=("delta",))
def bco_loss(
    policy_logps: Tensor,
    reference_logps: Tensor | None,
    labels: Tensor,
    *,
    delta: Tensor,
    beta: float = 0.1,
    udm_weights: Tensor | None = None,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """BCO: loss = -l_D*logsigmoid(rhat - delta) if u else -l_U*wgt(x)*logsigmoid(-(rhat - delta)).

    Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment",
    arXiv 2404.04656 (v1: reward shift + underlying distribution matching). rhat = beta*D(y|x);
    ``delta`` is the reward shift, a running mean of rhat kept by the caller (detached here).
    ``udm_weights`` [B] are density-ratio weights for undesirable examples (see
    :func:`udm_weights`); positives always get weight 1. ``desirable_weight`` /
    ``undesirable_weight`` (l_D, l_U; 1 in the paper) balance imbalanced classes, set from
    the counts by :func:`class_weight_hparams` unless given.
    """
    rewards = beta * log_ratio(policy_logps, reference_logps)
    shift = torch.as_tensor(delta, dtype=rewards.dtype, device=rewards.device).detach()
    labels = labels.bool()
    logits = rewards - shift
    undesirable = -F.logsigmoid(-logits)
    if udm_weights is not None:
        undesirable = undesirable * udm_weights.detach()
    losses = torch.where(labels, desirable_weight * -F.logsigmoid(logits), undesirable_weight * undesirable)
    metrics = labeled_metrics(rewards, labels, shift)
    metrics["delta"] = shift
    return losses, metrics


def udm_weights(prob_desirable: Tensor, *, clip: tuple[float, float] = (0.5, 10.0)) -> Tensor:
    """Density-ratio weights wgt(x) = clamp(g/(1-g), lo, hi) for BCO's distribution matching.

    ``prob_desirable`` [B] is g(x) = P(desirable | x) from a prompt classifier. With an exact
    classifier trained on balanced classes, g/(1-g) = p_pos(x)/p_neg(x), which reweights the
    undesirable prompts to the desirable prompts' distribution. Clip bounds follow common
    practice; the paper's values are unverified (ALGORITHMS.md §8, §15.4).
    """
    g = prob_desirable.clamp(1e-6, 1 - 1e-6)
    return (g / (1 - g)).clamp(*clip)


def _check_pmpo(hparams: dict[str, Any]) -> list[str]:
    alpha, beta = hparams["alpha"], hparams["beta"]
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"pmpo alpha must be in [0, 1], got {alpha}")
    if beta < 0:
        raise ValueError(f"pmpo beta must be >= 0, got {beta}")
    if alpha < 1.0 and beta < 1.0 - alpha:
        return [
            f"beta={beta} < 1 - alpha={1.0 - alpha:g}: rejected samples can push log-probs to -inf "
            "(collapse; ALGORITHMS.md §9). Use beta >= 1 - alpha; negative-only sets need more "
            "(beta >= (1 - alpha) / P_ref(reject) in the worst case)."
        ]
    return []


@register_loss("pmpo", feedback="unpaired", needs_reference=True, check=_check_pmpo)
def pmpo_loss(
    policy_logps: Tensor,
    reference_logps: Tensor | None,
    labels: Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 1.0,
    kl: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PMPO: loss_i = -(alpha*u_i - (1-alpha)*(1-u_i)) * logp_theta(y_i|x_i) + beta * KL_i.

    Abdolmaleki et al. 2024, "Learning from negative feedback, or positive feedback or both",
    arXiv 2410.04166, Eq. 10: J = alpha*E_a[logp] - (1-alpha)*E_r[logp] - beta*KL(pi_ref||pi).
    Reduction: the mean over all examples (accepted and rejected together), so each class is
    weighted by its frequency. For y ~ pi_ref with acceptance probability p(y) the population
    objective is sum_y c(y) log pi(y) with c = pi_ref*(alpha*p - (1-alpha)*(1-p) + beta):
    its optimum is c/sum(c) when c >= 0, and it collapses (log pi(y) -> -inf pays) if any
    c(y) < 0; the worst case p = 0 needs beta >= 1 - alpha (see :func:`pmpo_target`).

    KL(pi_ref || pi_theta): pass ``kl`` (a scalar, e.g. computed exactly or token-level),
    or leave it None for the Monte-Carlo estimate logp_ref(y) - logp_theta(y) on the batch's
    own samples, valid when they were drawn from pi_ref (ALGORITHMS.md §9 (a)): thumbs on
    reference samples, both classes in their natural proportions. On a one-class set the
    batch holds samples of q- (or q+), not pi_ref: with only negatives and the in-batch
    estimate the loss is (1 - alpha - beta)*logp + const, which collapses for beta < 1 - alpha
    and otherwise raises the rejected samples' likelihood. For negative-only data pass an
    exact or reference-sample ``kl``; the collapse threshold is then
    beta >= (1 - alpha) * max_y q-(y)/pi_ref(y) (see feedalign.envs.exact).
    """
    labels = labels.bool()
    sign = torch.where(labels, torch.full_like(policy_logps, alpha), torch.full_like(policy_logps, alpha - 1.0))
    if kl is None:
        if reference_logps is None:
            raise ValueError("pmpo needs reference log-probs (or an explicit kl) for its KL term")
        kl_term = reference_logps - policy_logps
    else:
        kl_term = kl.expand_as(policy_logps) if kl.dim() == 0 else kl
    losses = -sign * policy_logps + beta * kl_term
    metrics = {
        "logps/accepted": masked_mean(policy_logps.detach(), labels),
        "logps/rejected": masked_mean(policy_logps.detach(), ~labels),
        "kl": kl_term.detach().mean(),
    }
    return losses, metrics


def pmpo_target(ref_probs: Tensor, accept_probs: Tensor, *, alpha: float, beta: float) -> tuple[Tensor, Tensor]:
    """Population optimum of :func:`pmpo_loss` for a tabular policy and samples y ~ pi_ref.

    Args:
        ref_probs: [..., K] pi_ref(y|x).
        accept_probs: [..., K] p(u=1|x,y).
    Returns:
        (target [..., K], collapsed [...] bool). ``collapsed`` marks prompts where some
        c(y) < 0: there the objective is unbounded and no optimum exists; the target is
        then the clipped c/sum(c) for reference only. [derived, ALGORITHMS.md §9]
    """
    c = ref_probs * (alpha * accept_probs - (1.0 - alpha) * (1.0 - accept_probs) + beta)
    collapsed = (c < 0).any(dim=-1)
    c_pos = c.clamp(min=0)
    return c_pos / c_pos.sum(dim=-1, keepdim=True), collapsed
