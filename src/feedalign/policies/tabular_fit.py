"""Training loop for tabular models through the registered loss functions.

``fit_tabular`` feeds index-level feedback (see :mod:`feedalign.envs.exact_feedback`) to
``losses.call_loss``, the same call the language-model trainer makes: per-sequence log-probs
in, per-example losses out, batch objective = their mean (a weighted mean when rows carry a
``weight`` multiplicity). No loss math lives here.

A loss's declared state is computed by the very providers the trainer ships
(``LossSpec.make_state``), through :class:`TabularStateContext`: mismatched pairs are scored
by index, totals count each row with its multiplicity, and margin rewards come from a known
table (``margin_rewards``). Optional inputs (PMPO's ``kl``) come from ``inputs``:
name -> callable(StepContext) -> value; :func:`exact_kl` is the exact KL(pi_ref || pi_theta).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from feedalign.losses import LossSpec, StateProvider, call_loss, get_loss

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


def _rows(spec: LossSpec, policy: nn.Module, batch: Feedback, reference: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(policy rows, reference rows) of the batch: log-probs (reward kinds: rewards), pairs as
    chosen rows then rejected rows."""
    prompt = batch["prompt"]
    pairwise = spec.feedback in ("pair", "reward_pair")
    responses = (batch["chosen"], batch["rejected"]) if pairwise else (batch["response"],)
    if spec.feedback.startswith("reward_"):
        return torch.cat([policy.rewards(prompt, r) for r in responses]), None
    logps = torch.cat([policy_logps(policy, batch, prompt, r) for r in responses])
    return logps, None if reference is None else torch.cat([reference[prompt, r] for r in responses])


@dataclass
class TabularStateContext:
    """One batch of index-level feedback as a :class:`feedalign.losses.StateContext`."""

    step: StepContext
    feedback: str
    policy_logps: Tensor
    reference_logps: Tensor | None
    labels: Tensor | None
    margin_table: Tensor | None
    training: bool = True

    @property
    def size(self) -> int:
        return len(self.step.batch["prompt"])

    def total(self, values: Tensor) -> Tensor:
        weight = batch_weights(self.step.batch)
        return values.sum() if weight is None else (values * weight.to(values.dtype)).sum()

    def score_mismatched(self, partners: Sequence[int]) -> tuple[Tensor, Tensor | None]:
        batch = self.step.batch
        mismatched = batch["response"][torch.as_tensor(list(partners))]
        with torch.no_grad():
            logps = policy_logps(self.step.policy, batch, batch["prompt"], mismatched)
        return logps, _reference_logps(self.step.reference, batch["prompt"], mismatched)

    def margin_rewards(self) -> Tensor:
        if self.margin_table is None:
            raise ValueError("this loss needs margin rewards: pass margin_rewards=[P, K, m-1] to fit_tabular")
        batch = self.step.batch
        prompt = torch.cat([batch["prompt"], batch["prompt"]])
        return self.margin_table[prompt, torch.cat([batch["chosen"], batch["rejected"]])]


def batch_objective(
    spec: LossSpec,
    policy: nn.Module,
    batch: Feedback,
    *,
    reference: Tensor | None,
    hparams: Mapping[str, Any],
    providers: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Callable[[StepContext], Any]] | None = None,
    margin_rewards: Tensor | None = None,
    step: int = 0,
    training: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """(mean per-example loss of ``spec`` on ``batch``, metrics); providers update after it
    when ``training``."""
    ctx = StepContext(policy=policy, batch=batch, reference=reference, step=step)
    rows, ref_rows = _rows(spec, policy, batch, reference)
    state_ctx = TabularStateContext(ctx, spec.feedback, rows, ref_rows, batch.get("label"), margin_rewards, training)
    state: dict[str, Any] = {}
    for provider in (providers or {}).values():
        state.update(provider.compute(state_ctx))
    extra = {name: fn(ctx) for name, fn in (inputs or {}).items()}
    out = call_loss(spec, policy=rows, reference=ref_rows, labels=batch.get("label"), hparams=hparams,
                    state=state, extra=extra)
    if training:
        for provider in (providers or {}).values():
            provider.update(state_ctx)
    return weighted_mean(out.losses, batch_weights(batch)), out.metrics


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
    inputs: Mapping[str, Callable[[StepContext], Any]] | None = None,
    margin_rewards: Tensor | None = None,
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
        inputs: optional loss inputs, name -> callable(StepContext) (e.g. ``{"kl": exact_kl}``).
        margin_rewards: [P, K, m-1] (or [P, K]) rewards of the other objectives, for losses
            whose state needs margin rewards.
        steps, lr: optimisation steps (LBFGS: outer iterations) and learning rate.
        batch_size: None = full batch; else sequential mini-batches (fresh order per epoch).
        seed: seeds the mini-batch order.
        reference: [P, K] log pi_ref (fp32), required if ``spec.needs_reference``.
        optimizer: "adam" or "lbfgs" (full batch, deterministic providers only).
    """
    spec = get_loss(spec) if isinstance(spec, str) else spec
    resolved = spec.resolve_hparams(dict(hparams or {}))
    providers = spec.make_state(resolved)
    if spec.needs_margin_source and margin_rewards is None:
        raise ValueError(f"loss '{spec.name}' needs margin rewards: pass margin_rewards=[P, K, m-1]")
    table = None if margin_rewards is None else torch.as_tensor(margin_rewards, dtype=torch.float32)
    if table is not None and table.dim() == 2:
        table = table[..., None]
    if spec.needs_reference and reference is None and spec.feedback in ("pair", "unpaired"):
        raise ValueError(f"loss '{spec.name}' needs a reference: pass reference=[P, K] log pi_ref")
    reference = None if reference is None else torch.as_tensor(reference, dtype=torch.float32)
    if len(feedback["prompt"]) == 0:
        raise ValueError("fit_tabular: feedback has no rows")
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")

    def objective(batch: Feedback, step: int, training: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        return batch_objective(spec, policy, batch, reference=reference, hparams=resolved, providers=providers,
                               inputs=inputs, margin_rewards=table, step=step, training=training)

    params = [p for p in policy.parameters() if p.requires_grad]
    result = FitResult()
    stateful = sorted(name for name, p in providers.items() if type(p).update is not StateProvider.update)
    if optimizer == "lbfgs" and stateful:
        raise ValueError(f"loss '{spec.name}' keeps state {stateful} across steps; LBFGS needs a fixed objective")
    if optimizer == "lbfgs":
        result.losses = _run_lbfgs(params, objective, feedback, steps, lr)
    else:
        result.losses = _run_adam(params, objective, feedback, steps, lr, batch_size, seed)
    with torch.no_grad():
        _, metrics = objective(feedback, steps, training=False)
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


# ---------------------------------------------------------------------------- optional inputs
def exact_kl(ctx: StepContext) -> Tensor:
    """PMPO's KL(pi_ref || pi_theta): exact per prompt from the full tables, then the mean over
    the batch's rows (so each prompt counts as often as it appears). Differentiable."""
    if ctx.reference is None:
        raise ValueError("exact_kl needs the reference table")
    ref_logp = ctx.reference
    per_prompt = (ref_logp.exp() * (ref_logp - ctx.policy.log_probs())).sum(-1)  # [P]
    return weighted_mean(per_prompt[ctx.batch["prompt"]], batch_weights(ctx.batch))
