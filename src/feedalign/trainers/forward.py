"""One forward of one source's micro-batch: log-probs, state, loss, implicit-reward metrics.

Everything here is driven by ``LossSpec`` metadata: ``feedback`` picks the batch layout,
``needs_reference`` whether reference log-probs are computed, ``state`` which providers run,
``optional`` which optional inputs the loss gets (``kl`` from a source's reference samples),
and ``accuracy`` its reward verdict. The loss is called through ``losses.call_loss``. No loss
and no state is special-cased by name.
"""

from __future__ import annotations

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
from feedalign.losses import call_loss
from feedalign.trainers.state import TrainerStateContext, state_inputs

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
            from feedalign.policies.reference import packed_fields

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
    providers: dict[str, Any] = field(default_factory=dict)  # state name -> losses StateProvider
    kl_samples: KLSamples | None = None
    steer: Any = None  # SteeringSpec: per-example weight / margin_weights from the batch
    packing: bool = False  # padding-free micro-batches (train.packing)
    margin_source: Any = None  # (prompts, completions) -> [N, m-1], for losses that need one
    share_prompt: bool = False  # pairs: each prompt once in the packed row (train.share_prompt)
    data_counts: dict[str, int] = field(default_factory=dict)  # truncated / rejected rows

    @property
    def feedback(self) -> str:
        return self.spec.feedback

    def next_batch(self, micro_batch_size: int, pad_id: int) -> Batch:
        indices = self.sampler.next_indices(micro_batch_size)
        return collate([self.train_examples[i] for i in indices], self.feedback, pad_id, packing=self.packing,
                       share_prompt=self.share_prompt)


@dataclass
class SourceOutput:
    losses: Tensor  # [B] per-example loss (graph attached when training)
    metrics: dict[str, Tensor]
    batch: Batch
    correct: Tensor | None  # [B] bool: implicit reward agrees with the feedback
    margins: Tensor | None  # [B] reward margins beta*(D_w - D_l), pairs only


def _ties(batch: Batch, device: torch.device) -> Tensor | None:
    """[B] bool: pairs judged equally good (sources with ``ties: keep``), or None."""
    ties = batch.extras.get("ties")
    return None if ties is None else ties.to(device)


def _steer_hparams(source: Source, batch: Batch, device: torch.device) -> dict[str, Tensor]:
    """A steered source's per-example ``weight`` [B] and ``margin_weights`` [B, m-1], from
    each example's own weight vector; they replace the static hyperparameters."""
    if source.steer is None or source.steer.mode == "scalarize":  # scalarize: w enters via the draws
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
    policy, reference, kl = _logps(runtime, source, batch, training=training)
    labels = batch.labels.to(device) if batch.labels is not None else None
    ctx = TrainerStateContext(
        batch=batch, feedback=source.feedback, policy_logps=policy, reference_logps=reference, labels=labels,
        training=training, scorer=lambda p, c, ids: _score_texts(runtime, source, p, c, ids),
        gather=runtime.gather, margin_source=source.margin_source,
    )
    out = call_loss(
        source.spec, policy=policy, reference=reference, labels=labels, lengths=batch.lengths.to(device),
        hparams={**source.hparams, **_steer_hparams(source, batch, device)},
        state=state_inputs(source.providers, ctx), extra={"kl": kl, "ties": _ties(batch, device)},
    )
    metrics = out.metrics
    if kl is not None and "kl" not in metrics:
        metrics = {**metrics, "kl": kl.detach()}
    if training:
        for provider in source.providers.values():
            provider.update(ctx)
    return SourceOutput(out.losses, metrics, batch, out.correct, out.margins)


def reference_rows(batch: Batch, kl_batch: Batch | None, pad_id: int) -> tuple[dict[str, Any], list[str]]:
    """What the reference scores for one micro-batch, with the row ids that key its cache:
    the batch's rows (a steered batch's plain-prompt rows, ``batching.reference_tensors``),
    then the ``kl_samples`` rows. Training, evaluation and the reference-cache fill
    (``run.precompute_reference``) all build it here."""
    tensors, row_ids = reference_tensors(batch), list(batch.row_ids)
    if kl_batch is not None:
        tensors = concat_rows(tensors, kl_batch.tensors, pad_id)
        row_ids += [f"kl_samples/{i}" for i in kl_batch.row_ids]
    return tensors, row_ids


def _logps(
    runtime: Runtime, source: Source, batch: Batch, *, training: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Policy and reference log-probs of the batch's rows, and the ``kl`` input (None without
    ``kl_samples``): mean(logp_ref - logp_theta) over a micro-batch of reference samples,
    differentiable wrt the policy. The reference samples ride in the same forward as the
    batch (one call of the wrapped policy per backward, as DDP/FSDP expect)."""
    device = runtime.accelerator.device
    kl_batch = source.kl_samples.next_batch(runtime.pad_id, training=training) if source.kl_samples else None
    tensors = batch.tensors if kl_batch is None else concat_rows(batch.tensors, kl_batch.tensors, runtime.pad_id)
    policy = runtime.policy_logps(move_to(tensors, device))
    reference = None
    if source.spec.needs_reference or kl_batch is not None:
        ref_tensors, row_ids = reference_rows(batch, kl_batch, runtime.pad_id)
        reference = runtime.reference_logps(move_to(ref_tensors, device), row_ids)
    if kl_batch is None:
        return policy, reference, None
    rows = len(batch.row_ids)
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
        for kind, values in ((f"{prefix}rewards/accuracy/", out.correct), (f"{prefix}rewards/margins/", out.margins)):
            if values is None:
                continue
            values = values.detach().double()
            for name, rows in groups.items():
                part = values if len(groups) == 1 else values[torch.tensor(rows, device=values.device)]
                key = f"{kind}{name}"
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
    shards = eval_shards(
        len(source.eval_examples), batch_size, world=accelerator.num_processes,
        rank=accelerator.process_index, min_size=source.spec.min_batch_size,
    )
    rows = []
    for marked in shards:
        indices = [i if i >= 0 else -1 - i for i in marked]
        batch = collate([source.eval_examples[i] for i in indices], source.feedback, runtime.pad_id,
                        packing=source.packing, share_prompt=source.share_prompt)
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
                    for kind, value in (("eval/rewards/accuracy/", ok), ("eval/rewards/margins/", margin)):
                        if not math.isnan(value):
                            entry = objective_sums.setdefault(f"{kind}{name}", [0.0, 0.0])
                            entry[0] += value
                            entry[1] += 1.0
    finally:
        module.train(was_training)
    if any_eval:
        metrics["eval/loss"] = total
        metrics.update({k: s / c for k, (s, c) in sorted(objective_sums.items())})
    return metrics
