"""Tabular policies: a softmax over K fixed responses per prompt, with free logits.

A "response" is an index, and its sequence log-prob is one entry of a [P, K] table, so every
population target of docs/ALGORITHMS.md §14 is computable exactly and a fully flexible
policy can reach it. These models plug into the same loss functions as language models: they
expose ``sequence_logps(prompt_idx, response_idx)`` -> [B], the per-sequence log-probs every
registered loss consumes.

Models:
  * :class:`TabularPolicy`          free logits [P, K].
  * :class:`SteerableTabularPolicy` logits(w) = base + sum_i w_i * head_i, one model for all w.
  * :class:`MLPTabularPolicy`       the same table through a one-hidden-layer network (log-probs
                                    non-linear in the parameters; for weight-interpolation checks).
  * :class:`TabularReward`          free reward table [P, K] (reward-model losses).
  * :class:`OffsetImplicitReward`   beta*(logp_theta - logp_ref) - offset(x): the implicit reward
                                    of a tabular policy with a learned per-prompt offset.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def _check_logits(logits: Tensor, n_prompts: int, n_responses: int, name: str) -> Tensor:
    logits = torch.as_tensor(logits, dtype=torch.float32)
    if logits.shape != (n_prompts, n_responses):
        raise ValueError(f"{name}: expected shape ({n_prompts}, {n_responses}), got {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{name}: logits must be finite")
    return logits.clone()


class TabularPolicy(nn.Module):
    """pi_theta(y|x) = softmax_y(logits[x, y]) over ``n_responses`` responses per prompt.

    Args:
        n_prompts: P.
        n_responses: K.
        init_logits: optional [P, K] starting logits (e.g. log pi_ref, so training starts at
            the reference as LM fine-tuning starts at the SFT model); zeros (uniform) if None.
    """

    def __init__(self, n_prompts: int, n_responses: int, init_logits: Tensor | None = None) -> None:
        super().__init__()
        if init_logits is None:
            init_logits = torch.zeros(n_prompts, n_responses)
        self.n_prompts, self.n_responses = n_prompts, n_responses
        self.logits = nn.Parameter(_check_logits(init_logits, n_prompts, n_responses, "init_logits"))

    def log_probs(self) -> Tensor:
        """log pi_theta(y|x) as [P, K] (fp32)."""
        return torch.log_softmax(self.logits, dim=-1)

    def probs(self) -> Tensor:
        """pi_theta(y|x) as [P, K]."""
        return torch.softmax(self.logits, dim=-1)

    def sequence_logps(self, prompt_idx: Tensor, response_idx: Tensor) -> Tensor:
        """log pi_theta(response|prompt) for each example, [B] (differentiable)."""
        return self.log_probs()[prompt_idx, response_idx]


class SteerableTabularPolicy(nn.Module):
    """One policy for every weight vector: logits_w = base + sum_i w_i * head_i (+ MLP(w)).

    Why linear in w is exact: log pi*_w(y|x) = log pi_ref(y|x) + w.r(x,y)/beta - log Z_w(x)
    (ALGORITHMS.md §1). The last term is a per-prompt constant that the softmax ignores, so
    base = log pi_ref and head_i = r_i/beta give pi*_w for EVERY w at once. The family therefore
    contains the whole exact front, and training once with w sampled per example can recover
    it. (With sum_i w_i = 1, base can be folded into the heads; keeping it separate lets the
    model start at pi_ref with zero heads.)

    Args:
        n_prompts, n_responses, n_objectives: P, K, m.
        hidden: if set, add a residual MLP(w) -> [P, K] with one hidden layer of this width
            (zero-initialised output), for experiments with non-linear steering; None (default)
            keeps the exact linear family.
        init_logits: optional [P, K] base logits (e.g. log pi_ref).
    """

    def __init__(
        self,
        n_prompts: int,
        n_responses: int,
        n_objectives: int,
        hidden: int | None = None,
        init_logits: Tensor | None = None,
    ) -> None:
        super().__init__()
        if init_logits is None:
            init_logits = torch.zeros(n_prompts, n_responses)
        self.n_prompts, self.n_responses, self.n_objectives = n_prompts, n_responses, n_objectives
        self.base = nn.Parameter(_check_logits(init_logits, n_prompts, n_responses, "init_logits"))
        self.heads = nn.Parameter(torch.zeros(n_objectives, n_prompts, n_responses))
        self.mlp: nn.Module | None = None
        if hidden:
            last = nn.Linear(hidden, n_prompts * n_responses)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.mlp = nn.Sequential(nn.Linear(n_objectives, hidden), nn.Tanh(), last)

    def _weights(self, w: Any) -> Tensor:
        w = torch.as_tensor(w, dtype=torch.float32, device=self.base.device)
        if w.shape[-1] != self.n_objectives:
            raise ValueError(f"w: expected {self.n_objectives} weights per vector, got shape {tuple(w.shape)}")
        return w

    def logits_at(self, w: Any) -> Tensor:
        """Logits [P, K] for one weight vector w [m]."""
        w = self._weights(w)
        logits = self.base + torch.einsum("i,ipk->pk", w, self.heads)
        if self.mlp is not None:
            logits = logits + self.mlp(w).view(self.n_prompts, self.n_responses)
        return logits

    def log_probs(self, w: Any) -> Tensor:
        """log pi_w(y|x) as [P, K] for one weight vector w [m]."""
        return torch.log_softmax(self.logits_at(w), dim=-1)

    def probs(self, w: Any) -> Tensor:
        return torch.softmax(self.logits_at(w), dim=-1)

    def sequence_logps(self, prompt_idx: Tensor, response_idx: Tensor, w: Any) -> Tensor:
        """log pi_{w_b}(response_b|prompt_b), [B]; ``w`` is [m] (shared) or [B, m] (per example)."""
        w = self._weights(w)
        if w.dim() == 1:
            return self.log_probs(w)[prompt_idx, response_idx]
        # index_select + logsumexp: several times faster on CPU than fancy indexing and
        # log_softmax over [B, K] rows with small K (matters for million-row steering data).
        logits = torch.index_select(self.base, 0, prompt_idx)
        for i in range(self.n_objectives):
            logits = logits + w[:, i : i + 1] * torch.index_select(self.heads[i], 0, prompt_idx)
        if self.mlp is not None:
            logits = logits + self.mlp(w).view(-1, self.n_prompts, self.n_responses)[
                torch.arange(len(prompt_idx)), prompt_idx
            ]
        chosen = logits.gather(1, response_idx[:, None]).squeeze(1)
        return chosen - torch.logsumexp(logits, dim=-1)

    @torch.no_grad()
    def at(self, w: Any) -> TabularPolicy:
        """A frozen :class:`TabularPolicy` snapshot for weight vector w (for evaluation)."""
        return TabularPolicy(self.n_prompts, self.n_responses, self.logits_at(w).detach().clone())


class MLPTabularPolicy(nn.Module):
    """pi_theta(.|x) = softmax(MLP(one_hot(x))): the same table, parameterised non-linearly.

    Its log-probs are NOT linear in the parameters, which is what weight interpolation
    (rewarded soups, ALGORITHMS.md §12) would need to reproduce the geometric mixture; it is
    the counterpart of :class:`TabularPolicy` for checking soups outside that regime.

    Args:
        n_prompts, n_responses: P, K.
        hidden: width of the hidden layer.
        seed: seeds the initialisation.
    """

    def __init__(self, n_prompts: int, n_responses: int, hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.n_prompts, self.n_responses = n_prompts, n_responses
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(n_prompts, hidden, generator=gen))
        self.out = nn.Parameter(torch.randn(hidden, n_responses, generator=gen) / hidden**0.5)
        self.bias = nn.Parameter(torch.zeros(n_responses))

    def log_probs(self) -> Tensor:
        return torch.log_softmax(torch.tanh(self.embed) @ self.out + self.bias, dim=-1)

    def probs(self) -> Tensor:
        return self.log_probs().exp()

    def sequence_logps(self, prompt_idx: Tensor, response_idx: Tensor) -> Tensor:
        return self.log_probs()[prompt_idx, response_idx]


class TabularReward(nn.Module):
    """A reward model with one free value per (prompt, response): r_phi[x, y], [P, K]."""

    def __init__(self, n_prompts: int, n_responses: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(n_prompts, n_responses))

    def rewards(self, prompt_idx: Tensor, response_idx: Tensor) -> Tensor:
        return self.table[prompt_idx, response_idx]


class OffsetImplicitReward(nn.Module):
    """f(x, y) = beta*(logp_theta(y|x) - logp_ref(y|x)) - offset(x), offset learned per prompt.

    Trained with the BCE reward loss on thumbs, its population minimizer has
    beta*D = r - c(x) + offset(x); normalisation of pi_theta forces offset = c - beta*log Z,
    so pi_theta = pi* exactly (ALGORITHMS.md §8, "learned per-prompt offset").

    Args:
        policy: the :class:`TabularPolicy` being trained (its logits are parameters here).
        reference_logps: [P, K] log pi_ref.
        beta: KL coefficient.
    """

    def __init__(self, policy: TabularPolicy, reference_logps: Tensor, beta: float) -> None:
        super().__init__()
        self.policy = policy
        self.register_buffer("reference_logps", torch.as_tensor(reference_logps, dtype=torch.float32))
        self.beta = float(beta)
        self.offset = nn.Parameter(torch.zeros(policy.n_prompts))

    def rewards(self, prompt_idx: Tensor, response_idx: Tensor) -> Tensor:
        logps = self.policy.sequence_logps(prompt_idx, response_idx)
        ref = self.reference_logps[prompt_idx, response_idx]
        return self.beta * (logps - ref) - self.offset[prompt_idx]
