"""State of a loss: extra inputs computed from the batch (and from earlier batches).

A loss declares its state in its registration (``state={"kl_ref": KLReferencePoint}``);
the state name is the key under which the provider is saved in checkpoints. The math of
each provider lives here; the caller (the language-model trainer, the tabular fit) only
implements :class:`StateContext`, the few services a provider may ask of a batch:

* ``total(values)``: the sum of a per-row quantity over the batch, each row counted with
  its multiplicity and summed over processes (scalar tensor);
* ``score_mismatched(partners)``: policy and reference log-probs of (x_i, y_partners[i]),
  without gradient;
* ``margin_rewards()``: ``[rows, m-1]`` rewards of the other objectives for the batch's rows
  (needs the source's margin source, ``needs_margin_source``).

A provider computes the loss's keyword inputs (``compute``), may update itself after the
loss of a TRAINING batch was computed (``update``), and round-trips through
``state_dict`` / ``load_state_dict`` so a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from feedalign.losses import _hparams as hp


class StateContext(Protocol):
    feedback: str
    size: int  # examples in the batch (pairs count once)
    policy_logps: Tensor  # [rows]; pairs: chosen rows then rejected rows
    reference_logps: Tensor | None  # [rows]
    labels: Tensor | None  # [size] bool, unpaired feedback
    training: bool

    def total(self, values: Tensor) -> Tensor: ...

    def score_mismatched(self, partners: Sequence[int]) -> tuple[Tensor, Tensor | None]: ...

    def margin_rewards(self) -> Tensor: ...


class StateProvider:
    """Base class. Subclasses set ``outputs`` (the loss's keyword inputs they supply) and
    ``hparams`` (their own hyperparameters: name -> (default, validator)); ``uses`` names
    the loss hyperparameters they read."""

    outputs: ClassVar[tuple[str, ...]] = ()
    hparams: ClassVar[Mapping[str, tuple[Any, hp.Validator]]] = {}
    uses: ClassVar[tuple[str, ...]] = ()
    min_batch_size: ClassVar[int] = 1
    needs_margin_source: ClassVar[bool] = False

    def __init__(self, hparams: Mapping[str, Any]) -> None:
        del hparams

    def partners(self, size: int) -> list[int] | None:
        """The mismatched rows :meth:`compute` scores (None: it scores none)."""
        del size
        return None

    def compute(self, ctx: StateContext) -> dict[str, Tensor]:
        raise NotImplementedError

    def update(self, ctx: StateContext) -> None:
        """Called after the loss of a TRAINING batch was computed."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        del state


def log_ratios(policy: Tensor, reference: Tensor | None) -> Tensor:
    policy = policy.detach()
    return policy if reference is None else policy - reference.detach()


class KLReferencePoint(StateProvider):
    """KTO's reference point ``kl_ref``: mean of logp_theta(y_{i+1}|x_i) - logp_ref(y_{i+1}|x_i)
    over the batch (completions rotated by one), without gradient; the loss clamps it at 0
    (ALGORITHMS.md §7). Needs at least 2 examples."""

    outputs = ("kl_ref",)
    min_batch_size = 2

    def partners(self, size: int) -> list[int]:
        return [(i + 1) % size for i in range(size)]

    def compute(self, ctx: StateContext) -> dict[str, Tensor]:
        if ctx.size < self.min_batch_size:
            raise ValueError(
                "the KTO reference point pairs each prompt with the next example's completion and "
                f"needs a batch of at least 2 examples, got {ctx.size}"
            )
        with torch.no_grad():
            policy, reference = ctx.score_mismatched(self.partners(ctx.size))
            ratio = log_ratios(policy, reference).float()
            mean = ctx.total(ratio) / ctx.total(torch.ones_like(ratio))
        return {"kl_ref": mean.detach()}


SHIFT_RULES = ("midpoint", "cumulative")


class RewardShift(StateProvider):
    """BCO's reward shift ``delta`` over the implicit rewards rhat = beta*(logp_theta - logp_ref)
    of the training rows, updated after each training batch's loss, 0 before the first.

    ``delta_rule`` (ALGORITHMS.md §8):
      * ``midpoint`` (default): delta = (m+ + m-)/2, where m+ and m- are exponential moving
        averages (factor ``delta_momentum`` per batch) of the batch mean of rhat on desirable
        and on undesirable rows; a class absent from a batch keeps its average. This is the
        paper's rule, and it has a fixed point: at convergence delta is the midpoint of the
        class means of the final policy (:func:`feedalign.losses.unpaired.bco_fixed_point`).
      * ``cumulative``: the count-weighted mean of rhat over every row seen since the start
        (TRL's RunningMoments). Each step's rewards keep their weight forever, so delta at the
        end depends on the whole path (learning rate, number of steps, the zeros of step 1);
        it has no fixed point of its own.
    """

    outputs = ("delta",)
    uses = ("beta",)
    hparams = {
        "delta_rule": ("midpoint", hp.choice(*SHIFT_RULES)),
        "delta_momentum": (0.9, hp.momentum),
    }

    def __init__(self, hparams: Mapping[str, Any]) -> None:
        self.beta = float(hparams["beta"])
        self.rule = str(hparams.get("delta_rule", "midpoint"))
        self.momentum = float(hparams.get("delta_momentum", 0.9))
        # midpoint: [m+, m-] and how many batches each class appeared in; cumulative: [mean, 0]
        # and the row count. float64 tensors, kept on the batch's device (no host read).
        self.means: Tensor = torch.zeros(2, dtype=torch.float64)
        self.counts: Tensor = torch.zeros(2, dtype=torch.float64)

    def value(self) -> Tensor:
        if self.rule == "cumulative":
            return self.means[0]
        seen = self.counts > 0
        n_seen = seen.sum().clamp(min=1).to(self.means.dtype)
        return torch.where(seen, self.means, torch.zeros_like(self.means)).sum() / n_seen

    def compute(self, ctx: StateContext) -> dict[str, Tensor]:
        device = ctx.policy_logps.device
        self.means, self.counts = self.means.to(device), self.counts.to(device)
        return {"delta": self.value().to(torch.float32)}

    def update(self, ctx: StateContext) -> None:
        rewards = self.beta * log_ratios(ctx.policy_logps, ctx.reference_logps).double()
        self.means, self.counts = self.means.to(rewards.device), self.counts.to(rewards.device)
        if self.rule == "cumulative":
            total, n = ctx.total(rewards), ctx.total(torch.ones_like(rewards))
            mean = (self.means[0] * self.counts[0] + total) / (self.counts[0] + n)
            self.means = torch.stack([mean, self.means[1]])
            self.counts = self.counts + torch.stack([n, torch.zeros_like(n)])
            return
        if ctx.labels is None:
            raise ValueError("the midpoint reward shift needs labelled (unpaired) rows")
        labels = ctx.labels.bool()
        masks = torch.stack([labels, ~labels]).to(rewards.dtype)  # [2, rows]
        sums = torch.stack([ctx.total(rewards * m) for m in masks])
        ns = torch.stack([ctx.total(m) for m in masks])
        batch_means = sums / ns.clamp(min=1e-300)
        present = ns > 0
        ema = torch.where(self.counts > 0, self.momentum * self.means + (1 - self.momentum) * batch_means, batch_means)
        self.means = torch.where(present, ema, self.means)
        self.counts = self.counts + present.to(self.counts.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "means": self.means.cpu().tolist(), "counts": self.counts.cpu().tolist(),
                "beta": self.beta, "momentum": self.momentum}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("rule") != self.rule or "means" not in state:
            raise ValueError(
                f"the saved reward shift uses rule {state.get('rule', 'cumulative (older format)')!r}; "
                f"this run uses {self.rule!r}"
            )
        self.means = torch.tensor(state["means"], dtype=torch.float64)
        self.counts = torch.tensor(state["counts"], dtype=torch.float64)


class MarginRewards(StateProvider):
    """MODPO's ``chosen_margins`` / ``rejected_margins`` [B, m-1]: the other objectives'
    rewards of both sides of each pair, from the source's margin source, detached."""

    outputs = ("chosen_margins", "rejected_margins")
    needs_margin_source = True

    def compute(self, ctx: StateContext) -> dict[str, Tensor]:
        if ctx.feedback != "pair":
            raise ValueError("margin rewards are defined for pair losses only")
        b = ctx.size
        with torch.no_grad():
            values = ctx.margin_rewards()
        values = torch.as_tensor(values, dtype=torch.float32, device=ctx.policy_logps.device).detach()
        if values.dim() == 1:
            values = values[:, None]
        if values.dim() != 2 or values.shape[0] != 2 * b:
            raise ValueError(
                f"the margin source returned {tuple(values.shape)} for {2 * b} rows; expected "
                "one row of margin rewards [m-1] per (prompt, completion)"
            )
        return {"chosen_margins": values[:b], "rejected_margins": values[b:]}
