"""Losses on unpaired feedback: SFT (positives), KTO, BCO, PMPO.

``labels`` is a bool tensor [B]: True = desirable / thumbs up / accepted.
D(y|x) = logp_theta(y|x) - logp_ref(y|x) (docs/ALGORITHMS.md §0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from feedalign.losses import _hparams as hp
from feedalign.losses._common import labeled_metrics, labeled_verdict, log_ratio, masked_mean
from feedalign.losses._registry import register_loss
from feedalign.losses._state import KLReferencePoint, RewardShift


def _kto_verdict(inputs: Mapping[str, Any]) -> tuple[Tensor, None]:
    """Correct iff (D > z) agrees with the label, z = max(0, kl_ref): the side of the
    reference point KTO pushes each example to (the loss's ``rewards/accuracies``)."""
    rho = log_ratio(inputs["policy_logps"], inputs["reference_logps"])
    z = torch.as_tensor(inputs["kl_ref"], dtype=rho.dtype, device=rho.device).clamp(min=0)
    return labeled_verdict(inputs["beta"] * rho, inputs["labels"], inputs["beta"] * z)


def _bco_verdict(inputs: Mapping[str, Any]) -> tuple[Tensor, None]:
    """Correct iff the classifier's logit rhat - delta agrees with the label."""
    rewards = inputs["beta"] * log_ratio(inputs["policy_logps"], inputs["reference_logps"])
    return labeled_verdict(rewards, inputs["labels"], inputs["delta"])


def _log_ratio_verdict(inputs: Mapping[str, Any]) -> tuple[Tensor, None]:
    """Correct iff the policy raised (D > 0) the accepted and lowered the rejected samples."""
    return labeled_verdict(log_ratio(inputs["policy_logps"], inputs["reference_logps"]), inputs["labels"])


@register_loss("sft", feedback="sequence", needs_reference=False, optional=("lengths",),
               validators={"length_normalize": hp.flag})
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


@register_loss("kto", feedback="unpaired", needs_reference=True, state={"kl_ref": KLReferencePoint},
               validators={"beta": hp.positive, "desirable_weight": hp.positive, "undesirable_weight": hp.positive},
               accuracy=_kto_verdict)
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


@register_loss("bco", feedback="unpaired", needs_reference=True, state={"delta": RewardShift},
               validators={"beta": hp.positive, "desirable_weight": hp.positive, "undesirable_weight": hp.positive},
               accuracy=_bco_verdict)
def bco_loss(
    policy_logps: Tensor,
    reference_logps: Tensor | None,
    labels: Tensor,
    *,
    delta: Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """BCO: loss = -l_D*logsigmoid(rhat - delta) if u else -l_U*logsigmoid(-(rhat - delta)).

    Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment",
    arXiv 2404.04656 (reward shift). rhat = beta*D(y|x); ``delta`` is the reward shift kept
    by the state provider (:class:`~feedalign.losses._state.RewardShift`, rule
    ``delta_rule``: the paper's class midpoint by default), detached here. The paper's
    underlying distribution matching (prompt-classifier weights for the undesirable rows) is
    not implemented. Fixed point of the midpoint rule: :func:`bco_fixed_point`.
    ``desirable_weight`` / ``undesirable_weight`` (l_D, l_U; 1 in the paper) balance
    imbalanced classes, set from the counts by :func:`class_weight_hparams` unless given.
    """
    rewards = beta * log_ratio(policy_logps, reference_logps)
    shift = torch.as_tensor(delta, dtype=rewards.dtype, device=rewards.device).detach()
    labels = labels.bool()
    logits = rewards - shift
    losses = torch.where(labels, desirable_weight * -F.logsigmoid(logits), undesirable_weight * -F.logsigmoid(-logits))
    metrics = labeled_metrics(rewards, labels, shift)
    metrics["delta"] = shift
    return losses, metrics


def _check_pmpo(hparams: dict[str, Any]) -> list[str]:
    alpha, beta = hparams["alpha"], hparams["beta"]
    if alpha < 1.0 and beta < 1.0 - alpha:
        return [
            f"beta={beta} < 1 - alpha={1.0 - alpha:g}: rejected samples can push log-probs to -inf "
            "(collapse; ALGORITHMS.md §9). Use beta >= 1 - alpha; negative-only sets need more "
            "(beta >= (1 - alpha) / P_ref(reject) in the worst case)."
        ]
    return []


def _pmpo_in_batch_kl(labels: frozenset[bool]) -> str | None:
    """What the in-batch KL estimate (no ``kl`` input) does to PMPO on a one-class set (§9)."""
    if labels == {False}:
        return ("every example is negative, so the KL term becomes a likelihood term on the negatives "
                "themselves: the loss per example is (1 - alpha - beta)*logp + const, which collapses for "
                "beta < 1 - alpha, has zero gradient at beta = 1 - alpha and raises the negatives' "
                "likelihood above it")
    if labels == {True}:
        return ("every example is positive, so the KL term only adds beta*logp of the positives "
                "(weighted SFT) and does not hold the policy near the reference")
    return None


@register_loss("pmpo", feedback="unpaired", needs_reference=True, optional=("kl",), check=_check_pmpo,
               in_batch_kl_effect=_pmpo_in_batch_kl,
               validators={"alpha": hp.unit_interval, "beta": hp.nonnegative}, accuracy=_log_ratio_verdict)
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


def _bco_population_loss(s: Tensor, log_ref: Tensor, accept: Tensor, mass: Tensor, beta: float,
                         delta: float) -> tuple[Tensor, Tensor]:
    rhat = beta * (torch.log_softmax(log_ref + s, -1) - log_ref)
    per_row = accept * F.softplus(delta - rhat) + (1 - accept) * F.softplus(rhat - delta)
    return (mass * per_row).sum(), rhat


def _bco_policy_at(delta: float, s: Tensor, log_ref: Tensor, accept: Tensor, mass: Tensor, beta: float) -> Tensor:
    """Minimise the population BCE over the logits ``s`` for a fixed shift (float64 LBFGS, warm start)."""
    s = s.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([s], lr=1.0, max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-15,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _bco_population_loss(s, log_ref, accept, mass, beta, delta)[0]
        loss.backward()
        return loss

    opt.step(closure)
    # Newton polish (the Hessian is singular along each prompt's constant shift: least squares).
    s = s.detach()
    for _ in range(3):
        flat = s.reshape(-1)

        def objective(x: Tensor) -> Tensor:
            return _bco_population_loss(x.reshape(s.shape), log_ref, accept, mass, beta, delta)[0]

        grad = torch.autograd.functional.jacobian(objective, flat)
        hess = torch.autograd.functional.hessian(objective, flat)
        step = torch.linalg.lstsq(hess, -grad[:, None], rcond=1e-12).solution[:, 0]
        s = (flat + step).reshape(s.shape)
    return s


def _midpoint(rhat: Tensor, accept: Tensor, mass: Tensor) -> float:
    up, down = mass * accept, mass * (1 - accept)
    return float(((up * rhat).sum() / up.sum() + (down * rhat).sum() / down.sum()) / 2)


def bco_fixed_point(ref_probs: Tensor, accept_probs: Tensor, *, beta: float, prompt_probs: Tensor | None = None,
                    tol: float = 1e-10) -> tuple[Tensor, float]:
    """Population fixed point of :func:`bco_loss` with the ``midpoint`` shift rule, for a
    tabular softmax policy and thumbs on samples y ~ pi_ref (ALGORITHMS.md §8).

    Rows (x, y, u): x ~ ``prompt_probs`` (uniform by default), y ~ pi_ref(.|x), u ~ Bernoulli(p).
    At a fixed point the shift is the midpoint of the class means of rhat = beta*log(pi/pi_ref)
    under that row distribution, and the policy is stationary for that shift:
        delta = (E+[rhat] + E-[rhat]) / 2,
        sigma(rhat(x,y) - delta) - p(x,y) = mu(x) * pi(y|x) / pi_ref(y|x)  for every y,
    one multiplier mu(x) per prompt (the normalisation of pi(.|x)). Without that constraint
    every example would sit at sigma(rhat - delta) = p; with it the BCE residual is
    proportional to the density ratio. The system is solved here by bisection on delta, with
    the policy for each delta minimising the population loss to float64 precision.

    Args:
        ref_probs: [P, K] pi_ref(y|x).
        accept_probs: [P, K] p(u=1|x,y).
    Returns:
        (pi [P, K] float64, delta).
    """
    ref = torch.as_tensor(ref_probs, dtype=torch.float64)
    accept = torch.as_tensor(accept_probs, dtype=torch.float64)
    rho = torch.full((ref.shape[0],), 1.0 / ref.shape[0], dtype=torch.float64) if prompt_probs is None else \
        torch.as_tensor(prompt_probs, dtype=torch.float64)
    log_ref, mass = ref.log(), rho[:, None] * ref
    s = torch.zeros_like(ref)

    def gap(delta: float) -> tuple[float, Tensor]:
        logits = _bco_policy_at(delta, s, log_ref, accept, mass, beta)
        rhat = _bco_population_loss(logits, log_ref, accept, mass, beta, delta)[1]
        return _midpoint(rhat, accept, mass) - delta, logits

    lo, hi = -1.0, 1.0
    while gap(lo)[0] < 0:
        lo *= 2
    while gap(hi)[0] > 0:
        hi *= 2
    while hi - lo > tol:
        mid = (lo + hi) / 2
        value, s = gap(mid)
        lo, hi = (mid, hi) if value > 0 else (lo, mid)
    delta = (lo + hi) / 2
    s = _bco_policy_at(delta, s, log_ref, accept, mass, beta)
    return torch.softmax(log_ref + s, -1), delta
