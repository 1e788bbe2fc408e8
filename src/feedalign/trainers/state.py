"""The trainer's side of loss state: the services a state provider may ask of a micro-batch.

A loss declares its state in ``LossSpec.state`` (state name -> provider class; the math is in
:mod:`feedalign.losses._state`). The trainer builds the providers from that declaration
(:func:`make_providers`), hands each micro-batch to them as a :class:`TrainerStateContext`,
and saves them in checkpoints under their state names. Nothing here knows which loss or
which state it serves: a provider's needs are read from its class attributes
(``min_batch_size``, ``needs_margin_source``) and the services it calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from feedalign.config.errors import ConfigError
from feedalign.config.schema import DataSourceConfig, TrainConfig
from feedalign.data.batching import Batch

Scorer = Callable[[Sequence[str], Sequence[str], Sequence[str]], tuple[Tensor, Tensor | None]]


@dataclass
class TrainerStateContext:
    """One micro-batch of one source, as a :class:`feedalign.losses.StateContext`.

    ``scorer(prompts, completions, row_ids)`` returns (policy, reference) per-sequence
    log-probs [N] under no_grad (reference None without one); ``gather`` concatenates a
    tensor across processes (identity on one process); ``margin_source`` is the source's
    ``(prompts, completions) -> [N, m-1]`` (None without a ``margins`` block).
    """

    batch: Batch
    feedback: str
    policy_logps: Tensor  # [rows]
    reference_logps: Tensor | None  # [rows]
    labels: Tensor | None
    training: bool
    scorer: Scorer | None = None
    gather: Callable[[Tensor], Tensor] = lambda tensor: tensor
    margin_source: Any = None

    @property
    def size(self) -> int:
        return self.batch.size

    def total(self, values: Tensor) -> Tensor:
        return self.gather(values.sum().reshape(1)).sum()

    def mismatched_rows(self, partners: Sequence[int]) -> tuple[list[str], list[str], list[str]]:
        """(prompts, completions, row ids) of the pairs (x_i, y_partners[i])."""
        batch = self.batch
        ids = batch.row_ids
        completions = [batch.completions[j] for j in partners]
        row_ids = [f"{ids[i]}|kl|{ids[j]}" for i, j in enumerate(partners)]
        return list(batch.prompts[: len(partners)]), completions, row_ids

    def score_mismatched(self, partners: Sequence[int]) -> tuple[Tensor, Tensor | None]:
        if self.scorer is None:
            raise ValueError("this batch cannot score mismatched pairs (no scorer)")
        return self.scorer(*self.mismatched_rows(partners))

    def margin_rewards(self) -> Tensor:
        if self.margin_source is None:
            raise ValueError("this source has no margin source (add a `margins` block)")
        # Margin rewards score the task, not the steering prefix (steerable runs).
        prompts = self.batch.extras.get("plain_prompts", self.batch.prompts)
        return self.margin_source(prompts, self.batch.completions)


def check_state(spec: Any, source: DataSourceConfig, train: TrainConfig, prefix: str) -> None:
    """Fail before training when a loss's state cannot be provided for this source."""
    if spec.min_batch_size > train.micro_batch_size:
        raise ConfigError(
            f"loss '{spec.name}' computes its state ({', '.join(spec.state)}) inside a micro-batch and needs "
            f"micro_batch_size >= {spec.min_batch_size}, got {train.micro_batch_size}",
            key="train.micro_batch_size",
        )
    if spec.needs_margin_source:
        from feedalign.multiobjective.margins import margin_kinds

        if source.margins is None:
            raise ConfigError(
                f"loss '{spec.name}' needs margin rewards of the other objectives; add "
                "`margins: {kind: callable, target: 'module:function'}`",
                key=f"{prefix}.margins",
            )
        if source.margins.kind not in margin_kinds():
            raise ConfigError(
                f"unknown margin source '{source.margins.kind}'; valid: {sorted(margin_kinds())}",
                key=f"{prefix}.margins.kind",
            )


def make_margin_source(spec: Any, source: DataSourceConfig, *, prefix: str = "data") -> Any:
    """The source's margin source when its loss needs one (None otherwise); one that cannot be
    built (e.g. a function that does not import) is a ConfigError on ``<prefix>.margins``."""
    if not spec.needs_margin_source:
        return None
    from feedalign.multiobjective.margins import margin_source_from_config

    if source.margins is None:
        raise ConfigError(f"loss '{spec.name}' needs a `margins` source", key=f"{prefix}.margins")
    try:
        return margin_source_from_config(source.margins)
    except (ValueError, ImportError, OSError) as exc:
        raise ConfigError(f"cannot set up the margin source: {exc}", key=f"{prefix}.margins") from None


def make_providers(spec: Any, source: DataSourceConfig, hparams: dict[str, Any], *, prefix: str = "data") -> dict[str, Any]:
    """One provider per state name of ``spec`` (call :func:`check_state` first)."""
    del source
    try:
        return spec.make_state(hparams)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"cannot set up the state of loss '{spec.name}': {exc}", key=f"{prefix}.loss") from None


def state_inputs(providers: dict[str, Any], ctx: TrainerStateContext) -> dict[str, Tensor]:
    """The loss's state inputs for one micro-batch."""
    out: dict[str, Tensor] = {}
    for provider in providers.values():
        out.update(provider.compute(ctx))
    return out


def mismatched_rows(providers: dict[str, Any], ctx: TrainerStateContext) -> list[tuple[list[str], list[str], list[str]]]:
    """The (prompts, completions, row ids) every provider will score for this batch (what a
    reference cache must hold for it)."""
    rows = []
    for provider in providers.values():
        partners = provider.partners(ctx.size)
        if partners is not None:
            rows.append(ctx.mismatched_rows(partners))
    return rows
