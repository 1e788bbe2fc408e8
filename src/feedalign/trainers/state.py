"""State providers: the extra inputs a loss declares in ``LossSpec.state``.

The trainer maps each STATE NAME (never a loss name) to a provider. A provider computes the
keyword arguments for the loss from the micro-batch (``compute``), may update itself after
the loss was computed on a training batch (``update``), and round-trips through
``state_dict`` / ``load_state_dict`` so checkpoints resume exactly.

* ``kl_ref``   KTO reference point: mean log-ratio on mismatched pairs (x_i, y_{i+1}) made by
               rotating the micro-batch's completions by one; policy log-probs under no_grad,
               averaged across processes. Needs a micro-batch of at least 2.
* ``delta``    BCO reward shift: the count-weighted cumulative mean of the implicit rewards
               beta*(logp_theta - logp_ref) of ALL training rows seen so far (both classes
               together, each row counted once), updated AFTER the loss of a batch is
               computed; 0 before the first batch. With balanced classes this is the
               midpoint of the class means that the paper motivates; otherwise it leans
               toward the larger class (ALGORITHMS.md §8, §15.4).
* ``margins``  MODPO margin rewards of the other objectives, from a margin source selected
               by ``margins.kind`` (``callable``: a user function "module:function" taking
               ``(prompts, completions)`` and returning [N, m-1]; ``reward_model``,
               ``implicit``, ``builtin``, ``stack`` from :mod:`feedalign.multiobjective.margins`).
               More kinds plug in through :func:`register_margin_source`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from feedalign.config.errors import ConfigError
from feedalign.config.schema import DataSourceConfig, MarginsConfig, TrainConfig
from feedalign.data.batching import Batch


@dataclass
class StateContext:
    """What a provider sees of one micro-batch of one source.

    ``score_texts(prompts, completions, row_ids)`` returns (policy, reference) per-sequence
    log-probs [N] under no_grad (reference None without one); ``gather`` concatenates a
    tensor across processes (identity on one process).
    """

    batch: Batch
    feedback: str
    policy_logps: Tensor  # [rows]
    reference_logps: Tensor | None  # [rows]
    hparams: dict[str, Any]
    score_texts: Callable[[Sequence[str], Sequence[str], Sequence[str]], tuple[Tensor, Tensor | None]]
    gather: Callable[[Tensor], Tensor]
    training: bool


class StateProvider:
    """Base class: stateless by default."""

    def compute(self, ctx: StateContext) -> dict[str, Tensor]:
        raise NotImplementedError

    def update(self, ctx: StateContext) -> None:
        """Called after the loss of a TRAINING micro-batch was computed."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class KLReferencePoint(StateProvider):
    """``kl_ref``: mean of logp_theta(y_{i+1}|x_i) - logp_ref(y_{i+1}|x_i) over the batch."""

    def compute(self, ctx: StateContext) -> dict[str, Tensor]:
        prompts, completions = ctx.batch.prompts, ctx.batch.completions
        if len(prompts) < 2:
            raise ValueError(
                "state 'kl_ref' (KTO reference point) pairs each prompt with the next "
                f"example's completion and needs a micro-batch of at least 2, got {len(prompts)}; "
                "raise train.micro_batch_size"
            )
        rotated = list(completions[1:]) + list(completions[:1])
        ids = ctx.batch.row_ids
        row_ids = [f"{a}|kl|{b}" for a, b in zip(ids, ids[1:] + ids[:1])]
        policy, reference = ctx.score_texts(prompts, rotated, row_ids)
        log_ratio = policy - reference if reference is not None else policy
        gathered = ctx.gather(log_ratio.float().mean().reshape(1))
        return {"kl_ref": gathered.mean().detach()}


class RunningRewardShift(StateProvider):
    """``delta``: count-weighted cumulative mean of beta*(logp_theta - logp_ref). The mean
    is a float64 tensor on the batch's device (updated without a host read each step; the
    same IEEE double arithmetic as on the host)."""

    def __init__(self, beta: float) -> None:
        self.beta = float(beta)
        self.mean: float | Tensor = 0.0
        self.count = 0

    def compute(self, ctx: StateContext) -> dict[str, Tensor]:
        device = ctx.policy_logps.device
        mean = torch.as_tensor(self.mean, dtype=torch.float64, device=device)
        return {"delta": mean.to(torch.float32)}

    def update(self, ctx: StateContext) -> None:
        log_ratio = ctx.policy_logps.detach()
        if ctx.reference_logps is not None:
            log_ratio = log_ratio - ctx.reference_logps.detach()
        rewards = ctx.gather(self.beta * log_ratio.double())
        n = rewards.numel()
        mean = torch.as_tensor(self.mean, dtype=torch.float64, device=rewards.device)
        self.mean = (mean * self.count + rewards.sum()) / (self.count + n)
        self.count += n

    def state_dict(self) -> dict[str, Any]:
        return {"mean": float(self.mean), "count": self.count, "beta": self.beta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.count = float(state["mean"]), int(state["count"])


class MarginSource(Protocol):
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor: ...


_MARGIN_SOURCES: dict[str, Callable[[MarginsConfig], MarginSource]] = {}


def register_margin_source(kind: str, factory: Callable[[MarginsConfig], MarginSource]) -> None:
    """Make ``margins.kind: <kind>`` available; ``factory(margins_config)`` returns a callable
    ``(prompts, completions) -> Tensor [N, m-1]``."""
    if kind in margin_sources():
        raise ValueError(f"margin source '{kind}' is already registered")
    _MARGIN_SOURCES[kind] = factory


def margin_sources() -> dict[str, Callable[[MarginsConfig], MarginSource]]:
    """Registered margin-source kinds. The built-in kinds come from
    :mod:`feedalign.multiobjective.margins` (callable, builtin, reward_model, implicit,
    stack); without it only ``callable`` ("module:function") is available."""
    if not _MARGIN_SOURCES:
        try:
            from feedalign.multiobjective.margins import MARGIN_SOURCE_FACTORIES
        except ImportError:
            MARGIN_SOURCE_FACTORIES = {"callable": lambda cfg: import_callable(str(cfg.target))}
        _MARGIN_SOURCES.update(MARGIN_SOURCE_FACTORIES)
    return _MARGIN_SOURCES


def import_callable(target: str) -> Callable[..., Any]:
    """Import "package.module:function"."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module '{module_name}' of '{target}': {exc}") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"module '{module_name}' has no attribute '{attr}' (from '{target}')")
    if not callable(fn):
        raise ValueError(f"'{target}' is not callable")
    return fn  # type: ignore[return-value]


class MarginRewards(StateProvider):
    """``margins``: ``chosen_margins`` / ``rejected_margins`` [B, m-1] for a pair batch."""

    def __init__(self, source: MarginSource) -> None:
        self.source = source

    def compute(self, ctx: StateContext) -> dict[str, Tensor]:
        if ctx.feedback != "pair":
            raise ValueError("state 'margins' is defined for pair losses only")
        b = ctx.batch.size
        with torch.no_grad():
            # Margin rewards score the task, not the steering prefix (steerable runs).
            prompts = ctx.batch.extras.get("plain_prompts", ctx.batch.prompts)
            values = self.source(prompts, ctx.batch.completions)
        values = torch.as_tensor(values, dtype=torch.float32, device=ctx.policy_logps.device)
        if values.shape[0] != 2 * b:
            raise ValueError(
                f"the margin source returned {tuple(values.shape)} for {2 * b} rows; expected "
                "one row of margin rewards [m-1] per (prompt, completion)"
            )
        values = values.detach()
        return {"chosen_margins": values[:b], "rejected_margins": values[b:]}


def check_state(spec: Any, source: DataSourceConfig, train: TrainConfig, prefix: str) -> None:
    """Fail before training when a loss's state cannot be provided for this source."""
    for name in spec.state:
        if name not in _PROVIDERS:
            raise ConfigError(
                f"loss '{spec.name}' needs state '{name}', which the trainer cannot provide; "
                f"known states: {sorted(_PROVIDERS)}",
                key=f"{prefix}.loss",
            )
    if "kl_ref" in spec.state and train.micro_batch_size < 2:
        raise ConfigError(
            f"loss '{spec.name}' estimates its reference point from mismatched pairs inside a "
            f"micro-batch and needs micro_batch_size >= 2, got {train.micro_batch_size}",
            key="train.micro_batch_size",
        )
    if "margins" in spec.state:
        if source.margins is None:
            raise ConfigError(
                f"loss '{spec.name}' needs margin rewards of the other objectives; add "
                "`margins: {kind: callable, target: 'module:function'}`",
                key=f"{prefix}.margins",
            )
        if source.margins.kind not in margin_sources():
            raise ConfigError(
                f"unknown margin source '{source.margins.kind}'; valid: {sorted(margin_sources())}",
                key=f"{prefix}.margins.kind",
            )


def _reward_shift(spec: Any, source: DataSourceConfig, hparams: dict[str, Any]) -> StateProvider:
    if "beta" not in hparams:
        raise ValueError(f"state 'delta' needs a 'beta' hyperparameter; loss '{spec.name}' has none")
    return RunningRewardShift(hparams["beta"])


def _margin_rewards(spec: Any, source: DataSourceConfig, hparams: dict[str, Any]) -> StateProvider:
    if source.margins is None:
        raise ValueError(f"loss '{spec.name}' needs a `margins` source")
    return MarginRewards(margin_sources()[source.margins.kind](source.margins))


# State name -> provider factory (spec, source config, resolved hparams).
_PROVIDERS: dict[str, Callable[[Any, DataSourceConfig, dict[str, Any]], StateProvider]] = {
    "kl_ref": lambda spec, source, hparams: KLReferencePoint(),
    "delta": _reward_shift,
    "margins": _margin_rewards,
}


def make_providers(
    spec: Any, source: DataSourceConfig, hparams: dict[str, Any], *, prefix: str = "data"
) -> dict[str, StateProvider]:
    """One provider per state name of ``spec`` (call :func:`check_state` first). A provider
    that cannot be built (e.g. a margin function that does not import) is a ConfigError."""
    providers = {}
    for name in spec.state:
        try:
            providers[name] = _PROVIDERS[name](spec, source, hparams)
        except (ValueError, ImportError, OSError) as exc:
            key = f"{prefix}.margins" if name == "margins" else f"{prefix}.loss"
            raise ConfigError(f"cannot set up state '{name}': {exc}", key=key) from None
    return providers
