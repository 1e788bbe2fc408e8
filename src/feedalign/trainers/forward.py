"""One forward of one source's micro-batch: log-probs, state, loss, implicit-reward metrics.

Everything here is driven by ``LossSpec`` metadata: ``feedback`` picks the batch layout and
calling convention, ``needs_reference`` whether reference log-probs are computed, ``state``
which providers run, and the loss's signature which optional inputs it gets (``kl`` from a
source's reference samples). No loss is special-cased by name.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from feedalign.data.batching import (
    Batch,
    EpochSampler,
    Example,
    collate,
    collate_texts,
    concat_rows,
    move_to,
    reference_tensors,
)
from feedalign.trainers.state import StateContext, StateProvider

DEFAULT_OBJECTIVE = "default"


@dataclass
class Runtime:
    """The models and helpers shared by every source of a run."""

    accelerator: Any
    model: Any  # the policy itself (unwrapped; what is saved and returned)
    reference: Any | None
    tokenizer: Any
    pad_id: int
    chunk_size: int
    policy: Any = None  # the prepared LogpsModule (DDP/FSDP/DeepSpeed-wrapped) the loop calls

    def policy_logps(self, tensors: dict[str, Any]) -> Tensor:
        """Per-example log-probs of a padded or packed batch (one value per example)."""
        with self.accelerator.autocast():
            if self.policy is None:
                from feedalign.policies.hf import batch_logps

                return batch_logps(self.model, tensors, chunk_size=self.chunk_size)
            from feedalign.trainers.parallel import packed_fields

            return self.policy(
                tensors["input_ids"], tensors.get("attention_mask"), tensors["completion_mask"],
                tensors.get("position_ids"), packed=packed_fields(tensors),
            )

    def reference_logps(self, tensors: dict[str, Tensor], row_ids: Sequence[str]) -> Tensor:
        if self.reference is None:
            raise ValueError("this loss needs reference log-probs but the run has no reference")
        with torch.no_grad(), self.accelerator.autocast():
            return self.reference.logps(tensors, list(row_ids)).to(self.accelerator.device).float()

    def gather(self, tensor: Tensor) -> Tensor:
        return self.accelerator.gather(tensor) if self.accelerator.num_processes > 1 else tensor


@dataclass
class KLSamples:
    """Samples from the reference policy for a loss's ``kl`` input (``kl_samples``).

    Training draws ``batch_size`` of them per micro-step with its own seeded sampler (saved
    in checkpoints); evaluation always uses the first ``batch_size`` so it does not move the
    sampler and every evaluation sees the same estimate.
    """

    examples: list[Example]
    sampler: EpochSampler
    batch_size: int
    packing: bool = False

    def next_batch(self, pad_id: int, *, training: bool) -> Batch:
        if training:
            indices = self.sampler.next_indices(self.batch_size)
        else:
            indices = list(range(min(self.batch_size, len(self.examples))))
        return collate([self.examples[i] for i in indices], "sequence", pad_id, packing=self.packing)


@dataclass
class Source:
    """One data source of a run, ready to train."""

    name: str
    index: int
    spec: Any  # LossSpec
    hparams: dict[str, Any]
    weight: float
    max_length: int
    train_examples: list[Example]
    eval_examples: list[Example]
    sampler: EpochSampler
    providers: dict[str, StateProvider] = field(default_factory=dict)
    kl_samples: KLSamples | None = None
    steer: Any = None  # SteeringSpec: per-example weight / margin_weights from the batch
    packing: bool = False  # padding-free micro-batches (train.packing)
    data_counts: dict[str, int] = field(default_factory=dict)  # truncated / rejected rows

    @property
    def feedback(self) -> str:
        return self.spec.feedback

    @property
    def beta(self) -> float:
        """Scale of the implicit reward beta*log-ratio used for metrics (1 if no beta)."""
        return float(self.hparams.get("beta", 1.0))

    def next_batch(self, micro_batch_size: int, pad_id: int) -> Batch:
        indices = self.sampler.next_indices(micro_batch_size)
        return collate([self.train_examples[i] for i in indices], self.feedback, pad_id, packing=self.packing)


@dataclass
class SourceOutput:
    losses: Tensor  # [B] per-example loss (graph attached when training)
    metrics: dict[str, Tensor]
    batch: Batch
    correct: Tensor | None  # [B] bool: implicit reward agrees with the feedback
    margins: Tensor | None  # [B] reward margins beta*(D_w - D_l), pairs only


def _optional_inputs(spec: Any, batch: Batch, device: torch.device) -> dict[str, Tensor]:
    """Optional loss inputs the trainer can supply, passed when the signature names them."""
    params = inspect.signature(spec.fn).parameters
    lengths = batch.lengths.to(device)
    out: dict[str, Tensor] = {}
    if spec.feedback == "pair":
        b = batch.size
        if "chosen_lengths" in params:
            out["chosen_lengths"] = lengths[:b]
        if "rejected_lengths" in params:
            out["rejected_lengths"] = lengths[b:]
    elif "lengths" in params:
        out["lengths"] = lengths
    return out


def _steer_hparams(source: Source, batch: Batch, device: torch.device) -> dict[str, Tensor]:
    """A steered source's per-example ``weight`` [B] and ``margin_weights`` [B, m-1], from
    each example's own weight vector; they replace the static hyperparameters."""
    if source.steer is None:
        return {}
    from feedalign.multiobjective.steering import per_example_hparams

    ws = batch.extras.get("steer_weights")
    if ws is None:
        raise ValueError(f"source '{source.name}' is steered but its batch carries no weight vectors")
    hparams = per_example_hparams(ws.numpy(), source.steer.k, source.steer)
    return {name: value.to(device) for name, value in hparams.items()}


def source_forward(runtime: Runtime, source: Source, batch: Batch, *, training: bool) -> SourceOutput:
    """Per-example loss of ``batch`` for ``source``; providers update after a training batch."""
    device = runtime.accelerator.device
    spec = source.spec
    policy, reference, kl = _logps(runtime, source, batch, training=training)
    labels = batch.labels.to(device) if batch.labels is not None else None
    ctx = StateContext(
        batch=batch,
        feedback=spec.feedback,
        policy_logps=policy,
        reference_logps=reference,
        hparams=source.hparams,
        score_texts=lambda p, c, ids: _score_texts(runtime, source, p, c, ids),
        gather=runtime.gather,
        training=training,
    )
    state_kwargs: dict[str, Tensor] = {}
    for provider in source.providers.values():
        state_kwargs.update(provider.compute(ctx))
    kwargs = {**_optional_inputs(spec, batch, device), **state_kwargs, **source.hparams,
              **_steer_hparams(source, batch, device)}
    if kl is not None:
        kwargs["kl"] = kl
    if spec.feedback == "pair":
        b = batch.size
        ref_c, ref_r = (reference[:b], reference[b:]) if reference is not None else (None, None)
        losses, metrics = spec.fn(policy[:b], policy[b:], ref_c, ref_r, **kwargs)
    elif spec.feedback == "unpaired":
        losses, metrics = spec.fn(policy, reference, labels, **kwargs)
    else:
        losses, metrics = spec.fn(policy, **kwargs)
    if losses.shape != (batch.size,):
        raise ValueError(
            f"loss '{spec.name}' returned per-example losses of shape {tuple(losses.shape)}; "
            f"expected [{batch.size}]"
        )
    if kl is not None and "kl" not in metrics:
        metrics = {**metrics, "kl": kl.detach()}
    correct, margins = _reward_agreement(source, policy, reference, labels, state_kwargs, batch.size)
    if training:
        for provider in source.providers.values():
            provider.update(ctx)
    return SourceOutput(losses, metrics, batch, correct, margins)


def _logps(
    runtime: Runtime, source: Source, batch: Batch, *, training: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Policy and reference log-probs of the batch's rows, and the ``kl`` input (None without
    ``kl_samples``): mean(logp_ref - logp_theta) over a micro-batch of reference samples,
    differentiable wrt the policy. The reference samples ride in the same forward as the
    batch (one call of the wrapped policy per backward, as DDP/FSDP expect). A steered
    source's reference scores the completions after the plain prompts
    (``batching.reference_tensors``)."""
    device = runtime.accelerator.device
    tensors = move_to(batch.tensors, device)
    ref_tensors = move_to(reference_tensors(batch), device) if "reference_tensors" in batch.extras else tensors
    row_ids = list(batch.row_ids)
    if source.kl_samples is None:
        policy = runtime.policy_logps(tensors)
        reference = runtime.reference_logps(ref_tensors, row_ids) if source.spec.needs_reference else None
        return policy, reference, None
    rows = len(row_ids)
    kl_batch = source.kl_samples.next_batch(runtime.pad_id, training=training)
    kl_tensors = move_to(kl_batch.tensors, device)
    joined = concat_rows(tensors, kl_tensors, runtime.pad_id)
    ref_joined = joined if ref_tensors is tensors else concat_rows(ref_tensors, kl_tensors, runtime.pad_id)
    row_ids += [f"kl_samples/{i}" for i in kl_batch.row_ids]
    policy = runtime.policy_logps(joined)
    reference = runtime.reference_logps(ref_joined, row_ids)
    kl = (reference[rows:] - policy[rows:]).mean()
    return policy[:rows], reference[:rows], kl


def _score_texts(
    runtime: Runtime, source: Source, prompts: Sequence[str], completions: Sequence[str], ids: Sequence[str]
) -> tuple[Tensor, Tensor | None]:
    tensors = collate_texts(runtime.tokenizer, prompts, completions, source.max_length, runtime.pad_id)
    tensors = move_to(tensors, runtime.accelerator.device)
    with torch.no_grad():
        policy = runtime.policy_logps(tensors)
    reference = runtime.reference_logps(tensors, ids) if runtime.reference is not None else None
    return policy, reference


def _reward_agreement(
    source: Source,
    policy: Tensor,
    reference: Tensor | None,
    labels: Tensor | None,
    state_kwargs: dict[str, Tensor],
    b: int,
) -> tuple[Tensor | None, Tensor | None]:
    """Implicit reward r = beta*(logp_theta - logp_ref) (logp_ref = 0 without a reference).
    Pairs: correct iff r_w - r_l > 0. Labeled: correct iff sign(r - delta) matches the label
    (delta from the source's ``delta`` state, else 0). Sequence losses: no verdict."""
    with torch.no_grad():
        rewards = source.beta * (policy.detach() - (reference.detach() if reference is not None else 0.0))
        if source.feedback == "pair":
            margins = rewards[:b] - rewards[b:]
            return margins > 0, margins
        if source.feedback == "unpaired" and labels is not None:
            shift = state_kwargs.get("delta", torch.zeros((), device=rewards.device))
            return (rewards - shift > 0) == labels.bool(), None
    return None, None


def objectives_of(batch: Batch) -> list[str]:
    return [ex.objective or DEFAULT_OBJECTIVE for ex in batch.examples]


def reward_sums(outputs: Sequence[SourceOutput], prefix: str = "") -> dict[str, tuple[Any, float]]:
    """``(sum, count)`` of reward accuracy (pairs and labels together) and margins (pairs)
    per objective; ``sum / count`` is the metric, and sums merge across micro-steps and
    processes. Sums are float64 tensors on the outputs' device (nothing is read back here);
    counts are host floats."""
    sums: dict[str, tuple[Any, float]] = {}
    for out in outputs:
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(objectives_of(out.batch)):
            groups.setdefault(name, []).append(i)
        for kind, values in (("accuracy", out.correct), ("margins", out.margins)):
            if values is None:
                continue
            values = values.detach().double()
            for name, rows in groups.items():
                part = values if len(groups) == 1 else values[torch.tensor(rows, device=values.device)]
                key = f"{prefix}rewards/{kind}/{name}"
                total, count = sums.get(key, (0.0, 0.0))
                sums[key] = (total + part.sum(), count + float(len(rows)))
    return dict(sorted(sums.items()))


def reward_metrics(outputs: Sequence[SourceOutput], prefix: str = "") -> dict[str, float]:
    """Accuracy (pairs and labels together) and margins (pairs) per objective."""
    from feedalign.trainers.logging import to_floats

    sums = reward_sums(outputs, prefix)
    totals = to_floats({k: s for k, (s, _) in sums.items()})
    return {k: totals[k] / c for k, (_, c) in sums.items()}


def _eval_source(runtime: Runtime, source: Source, batch_size: int) -> Tensor:
    """Per-example results of ``source``'s held-out set, gathered from every process:
    ``[n, 4]`` float64 rows (example index, loss, correct or NaN, margin or NaN), each
    example once, in index order."""
    from feedalign.trainers.parallel import eval_shards

    accelerator = runtime.accelerator
    min_size = 2 if "kl_ref" in source.spec.state else 1
    shards = eval_shards(
        len(source.eval_examples), batch_size, world=accelerator.num_processes,
        rank=accelerator.process_index, min_size=min_size,
    )
    rows = []
    for marked in shards:
        indices = [i if i >= 0 else -1 - i for i in marked]
        batch = collate([source.eval_examples[i] for i in indices], source.feedback, runtime.pad_id,
                        packing=source.packing)
        out = source_forward(runtime, source, batch, training=False)
        nan = torch.full((batch.size,), math.nan, dtype=torch.float64, device=out.losses.device)
        correct = out.correct.double() if out.correct is not None else nan
        margins = out.margins.double() if out.margins is not None else nan
        index = torch.tensor(marked, dtype=torch.float64, device=out.losses.device)
        rows.append(torch.stack([index, out.losses.double(), correct, margins], dim=1))
    table = runtime.gather(torch.cat(rows))
    table = table[table[:, 0] >= 0]
    return table[table[:, 0].argsort()]


def evaluate(runtime: Runtime, sources: Sequence[Source], batch_size: int) -> dict[str, float]:
    """Held-out loss per source, weighted total loss, reward accuracy and margins per
    objective. Runs in eval mode under no_grad; providers are not updated. With several
    processes each evaluates its share of every batch (``parallel.eval_shards``) and the
    per-example results are gathered, so every example counts once."""
    module = runtime.policy if runtime.policy is not None else runtime.model
    was_training = module.training
    module.eval()
    metrics: dict[str, float] = {}
    objective_sums: dict[str, list[float]] = {}
    total, any_eval = 0.0, False
    try:
        with torch.no_grad():
            for source in sources:
                if not source.eval_examples:
                    continue
                any_eval = True
                table = _eval_source(runtime, source, batch_size).cpu()
                mean = float(table[:, 1].sum()) / table.shape[0]
                metrics[f"eval/loss/{source.name}"] = mean
                total += source.weight * mean
                correct = table[:, 2]
                if not bool(correct.isnan().all()):
                    metrics[f"eval/{source.name}/rewards/accuracy"] = float(correct.sum()) / table.shape[0]
                for index, _, ok, margin in table.tolist():
                    name = source.eval_examples[int(index)].objective or DEFAULT_OBJECTIVE
                    for kind, value in (("accuracy", ok), ("margins", margin)):
                        if not math.isnan(value):
                            entry = objective_sums.setdefault(f"eval/rewards/{kind}/{name}", [0.0, 0.0])
                            entry[0] += value
                            entry[1] += 1.0
    finally:
        module.train(was_training)
    if any_eval:
        metrics["eval/loss"] = total
        metrics.update({k: s / c for k, (s, c) in sorted(objective_sums.items())})
    return metrics
