"""The exact environment: a tabular multi-objective bandit with closed-form targets.

P prompts, K candidate responses per prompt, m objectives. Everything that
docs/ALGORITHMS.md states about population optima can be computed here exactly, so the
environment is the ground truth against which every loss is checked (§16).

Construction (seeded):
  * pi_ref(.|x) = softmax(ref_spread * N(0, 1)) -- non-uniform, full support.
  * raw rewards ~ N(0, S) per (x, y) with corr(r_i, r_j) = -conflict/(m-1): the objectives
    conflict. Each r_i is then normalised per prompt to mean 0 and std 1 under pi_ref and
    multiplied by ``reward_scale`` (comparable scales, ALGORITHMS.md §1, so w means something).
  * thumbs thresholds c_i(x) ~ threshold_shift + threshold_spread * N(0, 1); for a weight
    vector w the logistic annotator says "up" with P = sigma(w.r - w.c(x)).

All tensors are float64; policies (fp32) are compared through :func:`tv_distance`,
:func:`kl_divergence` and :meth:`ExactEnv.value`. Samplers of feedback live in
:mod:`feedalign.envs.exact_feedback`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

DTYPE = torch.float64


def tv_distance(p: Tensor, q: Tensor) -> float:
    """Total variation 0.5*sum_y |p - q| per prompt, mean over prompts. p, q: [P, K]."""
    p, q = torch.as_tensor(p, dtype=DTYPE), torch.as_tensor(q, dtype=DTYPE)
    return float(0.5 * (p - q).abs().sum(-1).mean())


def kl_divergence(p: Tensor, q: Tensor) -> float:
    """KL(p || q) = sum_y p log(p/q) per prompt, mean over prompts; inf if q = 0 where p > 0.

    With q = pi*_w and p a learned policy, beta*KL(p||pi*_w) is exactly the shortfall of p in
    the regularized objective (the Gibbs identity, §1)."""
    p, q = torch.as_tensor(p, dtype=DTYPE), torch.as_tensor(q, dtype=DTYPE)
    terms = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - q.clamp_min(0).log()), torch.zeros_like(p))
    return float(terms.sum(-1).mean())


def _as_weight(w: Any, m: int) -> Tensor:
    w = torch.as_tensor(w, dtype=DTYPE)
    if w.shape != (m,):
        raise ValueError(f"w: expected a weight vector of length {m}, got shape {tuple(w.shape)}")
    return w


class ExactEnv:
    """Tabular bandit with ground-truth rewards, a reference policy and closed-form optima.

    Args:
        n_prompts: P.
        n_responses: K (>= 2).
        n_objectives: m (>= 1).
        beta: the KL coefficient of the target problem max E[w.r] - beta*KL(pi||pi_ref).
        seed: seeds every random draw of the construction.
        conflict: in [0, 1); pairwise correlation of raw objectives is -conflict/(m-1).
        reward_scale: common scale of the normalised rewards.
        ref_spread: std of the reference logits (0 = uniform reference).
        threshold_shift, threshold_spread: thumbs thresholds c_i(x) (per prompt, per objective).
    """

    def __init__(
        self,
        n_prompts: int = 8,
        n_responses: int = 6,
        n_objectives: int = 2,
        beta: float = 1.0,
        seed: int = 0,
        *,
        conflict: float = 0.6,
        reward_scale: float = 1.0,
        ref_spread: float = 0.6,
        threshold_shift: float = 0.0,
        threshold_spread: float = 0.5,
    ) -> None:
        if n_responses < 2 or n_prompts < 1 or n_objectives < 1:
            raise ValueError(f"need P >= 1, K >= 2, m >= 1; got {n_prompts}, {n_responses}, {n_objectives}")
        if not 0.0 <= conflict < 1.0:
            raise ValueError(f"conflict must be in [0, 1), got {conflict}")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.n_prompts, self.n_responses, self.n_objectives = n_prompts, n_responses, n_objectives
        self.beta = float(beta)
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        shape = (n_prompts, n_responses)
        self.ref_logp = torch.log_softmax(ref_spread * torch.randn(shape, generator=gen, dtype=DTYPE), -1)
        corr = torch.full((n_objectives, n_objectives), -conflict / max(n_objectives - 1, 1), dtype=DTYPE)
        corr.fill_diagonal_(1.0)
        raw = torch.randn(*shape, n_objectives, generator=gen, dtype=DTYPE) @ torch.linalg.cholesky(corr).T
        mean = (self.ref_probs[..., None] * raw).sum(1, keepdim=True)
        std = ((self.ref_probs[..., None] * (raw - mean) ** 2).sum(1, keepdim=True)).sqrt()
        self.rewards = reward_scale * (raw - mean) / std  # [P, K, m]
        self.thresholds = threshold_shift + threshold_spread * torch.randn(
            n_prompts, n_objectives, generator=gen, dtype=DTYPE
        )  # [P, m]

    # ----------------------------------------------------------------- basic quantities
    @property
    def ref_probs(self) -> Tensor:
        return self.ref_logp.exp()

    def scalar_rewards(self, w: Any) -> Tensor:
        """w.r(x, y) as [P, K]."""
        return self.rewards @ _as_weight(w, self.n_objectives)

    def objective_rewards(self, k: int) -> Tensor:
        """r_k(x, y) as [P, K]."""
        return self.rewards[..., k]

    def value(self, probs: Tensor) -> Tensor:
        """J(pi) = E_x E_{y~pi}[r(x, y)] as [m] (prompts uniform)."""
        probs = torch.as_tensor(probs, dtype=DTYPE)
        return (probs[..., None] * self.rewards).sum(1).mean(0)

    def kl_to_ref(self, probs: Tensor) -> float:
        """Mean over prompts of KL(pi || pi_ref)."""
        return kl_divergence(probs, self.ref_probs)

    # ----------------------------------------------------------------- closed-form targets
    def log_partition(self, w: Any, beta: float | None = None) -> Tensor:
        """log Z_w(x) = log sum_y pi_ref(y|x) exp(w.r(x,y)/beta), [P]."""
        beta = self.beta if beta is None else beta
        return torch.logsumexp(self.ref_logp + self.scalar_rewards(w) / beta, -1)

    def optimum(self, w: Any, beta: float | None = None) -> Tensor:
        """pi*_w = softmax(log pi_ref + w.r/beta), [P, K] (§1)."""
        beta = self.beta if beta is None else beta
        return torch.softmax(self.ref_logp + self.scalar_rewards(w) / beta, -1)

    def regularized_objective(self, probs: Tensor, w: Any, beta: float | None = None) -> Tensor:
        """E_pi[w.r] - beta*KL(pi||pi_ref) per prompt, [P]."""
        beta = self.beta if beta is None else beta
        probs = torch.as_tensor(probs, dtype=DTYPE)
        logp = probs.clamp_min(1e-300).log()
        kl = (probs * (logp - self.ref_logp)).sum(-1)
        return (probs * self.scalar_rewards(w)).sum(-1) - beta * kl

    def win_probability(self, w: Any, mu: Tensor | None = None) -> Tensor:
        """P(y > mu | x) = E_{y'~mu} sigma(w.r(y) - w.r(y')) under BT(w.r), [P, K]."""
        mu = self.ref_probs if mu is None else torch.as_tensor(mu, dtype=DTYPE)
        s = self.scalar_rewards(w)
        return (torch.sigmoid(s[:, :, None] - s[:, None, :]) * mu[:, None, :]).sum(-1)

    def ipo_optimum(self, w: Any, tau: float, mu: Tensor | None = None) -> Tensor:
        """IPO target softmax(log pi_ref + P(y > mu)/tau) for BT(w.r) pairs drawn from mu (§5)."""
        return torch.softmax(self.ref_logp + self.win_probability(w, mu) / tau, -1)

    def accept_probability(self, w: Any) -> Tensor:
        """Logistic thumbs: P(up | x, y) = sigma(w.r(x,y) - w.c(x)), [P, K]."""
        w = _as_weight(w, self.n_objectives)
        return torch.sigmoid(self.scalar_rewards(w) - (self.thresholds @ w)[:, None])

    def positive_posterior(self, w: Any) -> Tensor:
        """q+(y|x) ∝ pi_ref * P(up): the target of SFT on accepted samples (§3), [P, K]."""
        q = self.ref_probs * self.accept_probability(w)
        return q / q.sum(-1, keepdim=True)

    def negative_posterior(self, w: Any) -> Tensor:
        """q-(y|x) ∝ pi_ref * P(down), [P, K]."""
        q = self.ref_probs * (1 - self.accept_probability(w))
        return q / q.sum(-1, keepdim=True)

    def pmpo_coefficients(self, w: Any, *, alpha: float, beta: float, data: str = "both") -> Tensor:
        """c(y|x) with population PMPO objective sum_y c(y) log pi(y) per prompt, [P, K].

        Derived for the library's pmpo reduction (per-example loss
        -(alpha*u - (1-alpha)*(1-u))*logp + beta*KL(x), mean over ALL rows; KL passed per
        prompt) with thumbs on y ~ pi_ref. Per prompt x, up to a positive factor:
          data="both":     c = pi_ref*(alpha*p - (1-alpha)*(1-p) + beta)
          data="positive": c = alpha*q+ + beta*pi_ref     (only accepted rows kept)
          data="negative": c = -(1-alpha)*q- + beta*pi_ref (only rejected rows kept)
        In the one-class sets a prompt's rows occur with frequency ∝ P(up|x) (or P(down|x)), and
        its KL term is weighted the same way, so that factor drops out per prompt.
        """
        p, ref = self.accept_probability(w), self.ref_probs
        if data == "both":
            return ref * (alpha * p - (1 - alpha) * (1 - p) + beta)
        if data == "positive":
            return alpha * self.positive_posterior(w) + beta * ref
        if data == "negative":
            return -(1 - alpha) * self.negative_posterior(w) + beta * ref
        raise ValueError(f"data must be 'both', 'positive' or 'negative', got {data!r}")

    def pmpo_optimum(self, w: Any, *, alpha: float, beta: float, data: str = "both") -> tuple[Tensor, Tensor]:
        """(c/sum(c) [P, K], collapsed [P] bool). Where some c(y) < 0 the objective is unbounded
        (pi(y) -> 0 pays without limit) and no optimum exists: ``collapsed`` marks those prompts
        and the returned row is the clipped c+/sum(c+) for reference only (§9)."""
        c = self.pmpo_coefficients(w, alpha=alpha, beta=beta, data=data)
        collapsed = (c < 0).any(-1)
        c = c.clamp_min(0)
        return c / c.sum(-1, keepdim=True), collapsed

    def pmpo_beta_threshold(self, w: Any, *, alpha: float, data: str = "both") -> float:
        """Smallest beta with c(y) >= 0 for every (x, y): below it PMPO collapses."""
        c0 = self.pmpo_coefficients(w, alpha=alpha, beta=0.0, data=data)
        return float((-c0 / self.ref_probs).max().clamp_min(0))

    def front(self, weights: Any, beta: float | None = None) -> Tensor:
        """Exact front: J(pi*_w) for each row of ``weights`` [n, m] -> [n, m]."""
        return torch.stack([self.value(self.optimum(w, beta)) for w in torch.as_tensor(weights, dtype=DTYPE)])

    # ----------------------------------------------------------------- prompt distributions
    def class_prompt_density(self, w: Any, label: bool) -> Tensor:
        """Prompt distribution of the thumbs-up (label=True) or thumbs-down set, [P]."""
        p = self.accept_probability(w)
        mass = (self.ref_probs * (p if label else 1 - p)).sum(-1)
        return mass / mass.sum()
