"""Training loop for tabular models through the registered loss functions.

``fit_tabular`` feeds index-level feedback (see :mod:`feedalign.envs.exact_feedback`) to
``LossSpec.fn`` with exactly the calling conventions of the language-model trainer
(:mod:`feedalign.losses._registry`): per-sequence log-probs in, per-example losses out, batch
objective = their mean (a weighted mean when rows carry a ``weight`` multiplicity). No loss
math lives here; the loop only gathers log-probs and computes the state a loss declares.

State providers (``state_fns``) map a name to a callable ``provider(ctx) -> dict`` of extra
keyword arguments for the loss. Every name in ``spec.state`` needs one; optional inputs
(PMPO's ``kl``, BCO's ``udm_weights``) may be provided the same way. Providers here:
  * :func:`rotated_kl_ref`  KTO reference point: mean log-ratio on (x_i, y_{i+1}) pairs made
                            by rotating responses within the batch, computed without gradient.
  * :class:`MidpointDelta`  BCO shift: running (EMA) midpoint of the mean implicit reward of
                            the desirable and the undesirable rows, detached.
  * :func:`exact_margins`   MODPO margins from a known reward table r_{-k} [P, K, m-1].
  * :func:`exact_kl`        PMPO KL(pi_ref || pi_theta), exact per prompt, mean over the
                            batch's prompts (differentiable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from feedalign.losses import LossSpec, get_loss

Feedback = dict[str, Tensor]


@dataclass
class StepContext:
    """What a state provider may look at: the model, this step's batch and the reference
    log-prob table [P, K] (or None)."""

    policy: nn.Module
    batch: Feedback
    reference: Tensor | None
    step: int


@dataclass
class FitResult:
    losses: list[float] = field(default_factory=list)  # batch objective after each step
    metrics: dict[str, float] = field(default_factory=dict)  # last step's loss metrics

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def batch_weights(batch: Feedback) -> Tensor | None:
    weight = batch.get("weight")
    return None if weight is None else weight.to(torch.float32)


def weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    return values.mean() if weight is None else (values * weight).sum() / weight.sum()


def policy_logps(policy: nn.Module, batch: Feedback, prompt: Tensor, response: Tensor) -> Tensor:
    """Per-sequence log-probs; rows carrying a weight vector ``w`` condition a steerable model."""
    if "w" in batch:
        return policy.sequence_logps(prompt, response, batch["w"])
    return policy.sequence_logps(prompt, response)


def _reference_logps(reference: Tensor | None, prompt: Tensor, response: Tensor) -> Tensor | None:
    return None if reference is None else reference[prompt, response]


def _loss_inputs(spec: LossSpec, policy: nn.Module, batch: Feedback, reference: Tensor | None) -> tuple:
    prompt = batch["prompt"]
    if spec.feedback == "pair":
        chosen, rejected = batch["chosen"], batch["rejected"]
        return (
            policy_logps(policy, batch, prompt, chosen),
            policy_logps(policy, batch, prompt, rejected),
            _reference_logps(reference, prompt, chosen),
            _reference_logps(reference, prompt, rejected),
        )
    if spec.feedback == "unpaired":
        response = batch["response"]
        return (
            policy_logps(policy, batch, prompt, response),
            _reference_logps(reference, prompt, response),
            batch["label"],
        )
    if spec.feedback == "sequence":
        return (policy_logps(policy, batch, prompt, batch["response"]),)
    if spec.feedback == "reward_pair":
        return (policy.rewards(prompt, batch["chosen"]), policy.rewards(prompt, batch["rejected"]))
    if spec.feedback == "reward_unpaired":
        return (policy.rewards(prompt, batch["response"]), batch["label"])
    raise ValueError(f"loss '{spec.name}': unsupported feedback kind {spec.feedback!r}")


def batch_objective(
    spec: LossSpec,
    policy: nn.Module,
    batch: Feedback,
    *,
    reference: Tensor | None,
    hparams: Mapping[str, Any],
    state_fns: Mapping[str, Callable[[StepContext], dict[str, Any]]],
    step: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """(mean per-example loss of ``spec`` on ``batch``, metrics)."""
    ctx = StepContext(policy=policy, batch=batch, reference=reference, step=step)
    extra: dict[str, Any] = {}
    for provider in state_fns.values():
        extra.update(provider(ctx))
    per_example, metrics = spec.fn(*_loss_inputs(spec, policy, batch, reference), **hparams, **extra)
    return weighted_mean(per_example, batch_weights(batch)), metrics


def _batches(n: int, batch_size: int | None, gen: torch.Generator):
    """Full batch (``None``) or sequential mini-batches over a fresh permutation per epoch."""
    while True:
        if batch_size is None or batch_size >= n:
            yield None
            continue
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def fit_tabular(
    policy: nn.Module,
    spec: LossSpec | str,
    feedback: Feedback,
    *,
    hparams: Mapping[str, Any] | None = None,
    state_fns: Mapping[str, Callable[[StepContext], dict[str, Any]]] | None = None,
    steps: int = 500,
    lr: float = 0.05,
    batch_size: int | None = None,
    seed: int = 0,
    reference: Tensor | None = None,
    optimizer: str = "adam",
) -> FitResult:
    """Minimise ``spec``'s batch objective on ``feedback`` over ``policy``'s parameters.

    Args:
        policy: a tabular model (``sequence_logps`` for policy losses, ``rewards`` for the
            reward-model losses), e.g. :class:`~feedalign.policies.tabular.TabularPolicy`.
        spec: a registered loss or its name.
        feedback: index-level rows (``prompt`` plus the columns of the loss's feedback kind;
            optional ``weight`` [N] and ``w`` [N, m]).
        hparams: overrides of the loss's hyperparameters (checked by ``resolve_hparams``).
        state_fns: name -> provider for every name in ``spec.state`` (and optional inputs).
        steps, lr: optimisation steps (LBFGS: outer iterations) and learning rate.
        batch_size: None = full batch; else sequential mini-batches (fresh order per epoch).
        seed: seeds the mini-batch order.
        reference: [P, K] log pi_ref (fp32), required if ``spec.needs_reference``.
        optimizer: "adam" or "lbfgs" (full batch, deterministic providers only).
    """
    spec = get_loss(spec) if isinstance(spec, str) else spec
    resolved = spec.resolve_hparams(dict(hparams or {}))
    state_fns = dict(state_fns or {})
    missing = sorted(set(spec.state) - set(state_fns))
    if missing:
        raise ValueError(f"loss '{spec.name}' needs state {missing}; pass a provider for each in state_fns")
    if spec.needs_reference and reference is None and spec.feedback in ("pair", "unpaired"):
        raise ValueError(f"loss '{spec.name}' needs a reference: pass reference=[P, K] log pi_ref")
    reference = None if reference is None else torch.as_tensor(reference, dtype=torch.float32)
    if len(feedback["prompt"]) == 0:
        raise ValueError("fit_tabular: feedback has no rows")
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")

    def objective(batch: Feedback, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        return batch_objective(
            spec, policy, batch, reference=reference, hparams=resolved, state_fns=state_fns, step=step
        )

    params = [p for p in policy.parameters() if p.requires_grad]
    result = FitResult()
    if optimizer == "lbfgs":
        result.losses = _run_lbfgs(params, objective, feedback, steps, lr)
    else:
        result.losses = _run_adam(params, objective, feedback, steps, lr, batch_size, seed)
    with torch.no_grad():
        _, metrics = objective(feedback, steps)
    result.metrics = {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}
    return result


def _run_adam(params, objective, feedback: Feedback, steps: int, lr: float, batch_size: int | None,
              seed: int) -> list[float]:
    opt = torch.optim.Adam(params, lr=lr)
    batches = _batches(len(feedback["prompt"]), batch_size, torch.Generator().manual_seed(seed))
    losses = []
    for step in range(steps):
        index = next(batches)
        batch = feedback if index is None else {k: v[index] for k, v in feedback.items()}
        opt.zero_grad()
        loss, _ = objective(batch, step)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _run_lbfgs(params, objective, feedback: Feedback, steps: int, lr: float) -> list[float]:
    opt = torch.optim.LBFGS(params, lr=lr, max_iter=20, history_size=50, line_search_fn="strong_wolfe")
    losses = []
    for step in range(steps):

        def closure() -> Tensor:
            opt.zero_grad()
            loss, _ = objective(feedback, step)
            loss.backward()
            return loss

        losses.append(float(opt.step(closure).detach()))
    return losses


# ---------------------------------------------------------------------------- state providers
def rotated_kl_ref(ctx: StepContext) -> dict[str, Tensor]:
    """KTO reference point: mean over the batch of D(y_{i+1} | x_i) (responses rotated by one),
    computed without gradient; the loss clamps it at 0. Needs >= 2 rows."""
    batch = ctx.batch
    with torch.no_grad():
        mismatched = batch["response"].roll(-1)
        logps = policy_logps(ctx.policy, batch, batch["prompt"], mismatched)
        ref = _reference_logps(ctx.reference, batch["prompt"], mismatched)
        log_ratio = logps if ref is None else logps - ref
        return {"kl_ref": weighted_mean(log_ratio, batch_weights(batch))}


class MidpointDelta:
    """BCO reward shift: EMA over steps of (mean rhat on desirable + mean rhat on undesirable)/2,
    rhat = beta*(logp_theta - logp_ref), detached (the paper's midpoint rule, ALGORITHMS.md §8).

    Args:
        beta: the loss's beta.
        momentum: EMA factor in [0, 1); 0 = this batch's midpoint only.
    """

    def __init__(self, beta: float, momentum: float = 0.9) -> None:
        self.beta, self.momentum = float(beta), float(momentum)
        self.value: Tensor | None = None

    def __call__(self, ctx: StepContext) -> dict[str, Tensor]:
        batch = ctx.batch
        with torch.no_grad():
            logps = policy_logps(ctx.policy, batch, batch["prompt"], batch["response"])
            ref = _reference_logps(ctx.reference, batch["prompt"], batch["response"])
            rhat = self.beta * (logps if ref is None else logps - ref)
            weight = batch_weights(batch)
            weight = torch.ones_like(rhat) if weight is None else weight
            label = batch["label"].bool()
            means = [weighted_mean(rhat[m], weight[m]) for m in (label, ~label) if m.any()]
            midpoint = torch.stack(means).mean()
            if self.value is None:
                self.value = midpoint
            else:
                self.value = self.momentum * self.value + (1 - self.momentum) * midpoint
        return {"delta": self.value}


def exact_margins(margin_rewards: Tensor) -> Callable[[StepContext], dict[str, Tensor]]:
    """MODPO margins from a known table r_{-k}: [P, K, m-1] (or [P, K])."""
    table = torch.as_tensor(margin_rewards, dtype=torch.float32)
    if table.dim() == 2:
        table = table[..., None]

    def provider(ctx: StepContext) -> dict[str, Tensor]:
        batch = ctx.batch
        return {
            "chosen_margins": table[batch["prompt"], batch["chosen"]],
            "rejected_margins": table[batch["prompt"], batch["rejected"]],
        }

    return provider


def exact_kl(ctx: StepContext) -> dict[str, Tensor]:
    """PMPO's KL(pi_ref || pi_theta): exact per prompt from the full tables, then the mean over
    the batch's rows (so each prompt counts as often as it appears). Differentiable."""
    if ctx.reference is None:
        raise ValueError("exact_kl needs the reference table")
    ref_logp = ctx.reference
    per_prompt = (ref_logp.exp() * (ref_logp - ctx.policy.log_probs())).sum(-1)  # [P]
    return {"kl": weighted_mean(per_prompt[ctx.batch["prompt"]], batch_weights(ctx.batch))}
