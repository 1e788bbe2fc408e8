"""``call_loss``: the one place a loss is called, for the trainer, the exact benchmark and
reward-model training.

The caller hands over the ROWS of a batch (one value per sequence; for pair feedback the
chosen rows then the rejected rows) and whatever optional inputs it can compute;
``call_loss`` lays them out as the loss's positional inputs, passes the optional inputs the
loss declares, its state and its hyperparameters, checks the result's shape and computes the
loss's reward accuracy from the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from feedalign.losses._registry import LossSpec


@dataclass
class LossOutput:
    losses: Tensor  # [B] per-example loss
    metrics: dict[str, Tensor]
    correct: Tensor | None  # [B] bool: the loss's reward verdict agrees with the feedback
    margins: Tensor | None  # [B] reward margins of pairs (None otherwise)


def _split(rows: Tensor | None, b: int) -> tuple[Tensor | None, Tensor | None]:
    return (None, None) if rows is None else (rows[:b], rows[b:])


def loss_inputs(
    spec: LossSpec,
    policy: Tensor,
    reference: Tensor | None = None,
    labels: Tensor | None = None,
    lengths: Tensor | None = None,
) -> dict[str, Any]:
    """The positional inputs (by name) and the length inputs of ``spec`` from batch rows.

    Args:
        policy: [rows] policy log-probs (reward kinds: rewards); pairs: 2B rows, chosen first.
        reference: [rows] reference log-probs or None.
        labels: [B] bool (unpaired kinds).
        lengths: [rows] completion token counts, or None.
    """
    names = spec.inputs
    pairwise = spec.feedback in ("pair", "reward_pair")
    b = policy.shape[0] // 2 if pairwise else policy.shape[0]
    if pairwise and policy.shape[0] != 2 * b:
        raise ValueError(f"loss '{spec.name}': a pair batch needs an even number of rows, got {policy.shape[0]}")
    if spec.feedback == "pair":
        values = (*_split(policy, b), *_split(reference, b))
    elif spec.feedback == "reward_pair":
        values = _split(policy, b)
    elif spec.feedback == "unpaired":
        values = (policy, reference, labels)
    elif spec.feedback == "sequence":
        values = (policy,)
    else:
        values = (policy, labels)
    out = dict(zip(names, values))
    if "labels" in out and out["labels"] is None:
        raise ValueError(f"loss '{spec.name}' takes '{spec.feedback}' feedback and needs labels")
    if lengths is not None:
        if pairwise:
            out["chosen_lengths"], out["rejected_lengths"] = _split(lengths, b)
        else:
            out["lengths"] = lengths
    return out


def call_loss(
    spec: LossSpec,
    *,
    policy: Tensor,
    reference: Tensor | None = None,
    labels: Tensor | None = None,
    lengths: Tensor | None = None,
    hparams: Mapping[str, Any],
    state: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> LossOutput:
    """Per-example loss, metrics and reward verdict of ``spec`` on one batch.

    Args:
        spec: the registered loss.
        policy, reference, labels, lengths: the batch rows (see :func:`loss_inputs`).
        hparams: resolved hyperparameters (``spec.resolve_hparams``); per-example tensors may
            replace some (steered sources). Those of the loss's state are not passed to it.
        state: the keyword inputs computed by the loss's state providers.
        extra: optional inputs the caller can supply (e.g. ``kl``); only those the loss
            declares in ``optional`` are passed.
    """
    inputs = loss_inputs(spec, policy, reference, labels, lengths)
    inputs = {k: v for k, v in inputs.items() if k in spec.inputs or spec.takes(k)}
    for name, value in (extra or {}).items():
        if spec.takes(name) and value is not None:
            inputs[name] = value
    expected = {out for provider in spec.state.values() for out in provider.outputs}
    given = dict(state or {})
    if set(given) != expected:
        raise ValueError(f"loss '{spec.name}' needs state inputs {sorted(expected)}, got {sorted(given)}")
    inputs.update(given)
    inputs.update({name: hparams[name] for name in spec.fn_hparams if name in hparams})
    losses, metrics = spec.fn(**inputs)
    b = inputs[spec.inputs[0]].shape[0]
    if losses.shape != (b,):
        raise ValueError(f"loss '{spec.name}' returned per-example losses of shape {tuple(losses.shape)}; expected [{b}]")
    correct, margins = spec.accuracy(inputs) if spec.accuracy is not None else (None, None)
    return LossOutput(losses, dict(metrics), correct, margins)
