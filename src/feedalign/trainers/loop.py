"""The one training loop for every registered policy loss.

Each optimizer step runs ``grad_accum`` micro-steps; in each micro-step EVERY data source
contributes a micro-batch and the loss is

    total = sum_k weight_k * mean_i(per_example_loss_k[i])

(accelerate divides it by ``grad_accum`` before backward, so for losses whose batch
objective is a mean, 1 micro-batch of 8 and 8 micro-batches of 1 give the same gradient).
What a source needs (batch layout, reference log-probs, state such as KTO's reference
point or BCO's reward shift) comes from its ``LossSpec``; the loop never looks at a loss
name.

Several processes (``accelerate launch``; see docs/distributed.md): the policy is wrapped in
a ``LogpsModule`` whose forward computes the per-sequence log-probs, and that module goes
through ``accelerator.prepare`` with the optimizer and scheduler, so DDP, FSDP or DeepSpeed
act on every policy forward. Every process takes its own slice of each global micro-batch,
so N processes x micro-batch b train like 1 process x micro-batch N*b (global batch per
optimizer step: N x micro_batch_size x grad_accum); logged metrics are averaged over the
processes and evaluation is split among them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from feedalign.config.checks import check_config
from feedalign.config.loader import config_from_dict, config_to_dict, load_config
from feedalign.config.schema import Config
from feedalign.data.batching import weighted_mean
from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers.forward import SourceOutput, evaluate, reward_sums, source_forward
from feedalign.trainers.logging import MetricsAverager, MetricsLogger, format_metrics
from feedalign.trainers.final import FINAL_DIR, save_final
from feedalign.trainers.parallel import merge_sums
from feedalign.trainers.lock import OutputDirLock
from feedalign.trainers.run import Run, TrainerCallback, prepare_run, release_accelerator, save_run
from feedalign.trainers.setup import make_accelerator
from feedalign.trainers.signals import StopRequest, TrainingInterrupted
from feedalign.trainers.state import check_state

logger = logging.getLogger("feedalign.train")

NONFINITE_FILE = "nonfinite_batch.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the offending batch is saved to
    ``output_dir/nonfinite_batch.json``."""

    def __init__(self, message: str, *, step: int, record_ids: dict[str, list[str]], path: Path) -> None:
        super().__init__(message)
        self.step = step
        self.record_ids = record_ids
        self.path = path


@dataclass
class TrainResult:
    """What a run produced. ``model`` is the trained policy (peft-wrapped for LoRA)."""

    output_dir: Path
    final_dir: Path | None
    steps: int
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    model: Any
    tokenizer: Any
    checkpoint: Path | None = None
    resumed_from: Path | None = None
    seconds: float = 0.0  # wall time of train(), loading included
    loop_seconds: float = 0.0  # wall time of the training steps (evaluation and saves included)
    start_step: int = 0  # the step the run started (or resumed) at
    source_names: list[str] = field(default_factory=list)
    health_warnings: tuple[str, ...] = ()  # trainers.health: collapse signs the losses hide


def train(
    config: Config | Mapping[str, Any] | str | Path,
    *,
    overrides: Sequence[str] | None = None,
    model: Any = None,
    tokenizer: Any = None,
    records: Mapping[str, Any] | None = None,
    callbacks: Sequence[TrainerCallback] | None = None,
    resume: bool = False,
    resume_or_start: bool = False,
    allow_changed_data: bool = False,
) -> TrainResult:
    """Train a policy on every data source of ``config`` with its registered loss.

    Args:
        config: a :class:`Config`, a dict in the YAML layout, or a YAML file path.
        overrides: ``key.sub=value`` strings applied on top of ``config``.
        model, tokenizer: use these objects instead of loading ``model.path`` (the model is
            trained in place; LoRA from ``model.lora`` is applied only to loaded models).
        records: in-memory data per source name (lists of records, a ``datasets.Dataset``
            or a list of row dicts); such sources need no ``path``.
        callbacks: :class:`TrainerCallback` objects.
        resume: continue from the newest complete checkpoint in ``train.output_dir``; without
            a usable one this is a ConfigError. The checkpoint must have been trained on the
            same data and settings that cannot change (see ``trainers.resume``).
        resume_or_start: like ``resume``, but start from scratch when there is no usable
            checkpoint.
        allow_changed_data: resume even if a source's data fingerprint differs (a warning).

    Raises:
        ConfigError, FeedbackDataError: before any training step (also: ``output_dir`` is
            locked by another live run).
        NonFiniteLossError: the loss became NaN/inf (batch saved to nonfinite_batch.json).
        TrainingInterrupted: SIGTERM or SIGINT; a checkpoint of the last step was written.
        CheckpointWriteError: a checkpoint or the final model could not be written.
    """
    started = time.perf_counter()
    resume = resume or resume_or_start
    config = _as_config(config, overrides)
    out = Path(config.train.output_dir).expanduser()
    # One run per output_dir, checked first: a second run names the holder, whatever else
    # it would find there. The main process (RANK 0 of a launch) holds the lock.
    lock = OutputDirLock(out) if int(os.environ.get("RANK", "0")) == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        return _train_locked(config, model, tokenizer, records, callbacks, resume, resume_or_start,
                             allow_changed_data, started)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(config: Config, model: Any, tokenizer: Any, records: Any, callbacks: Any,
                  resume: bool, resume_or_start: bool, allow_changed_data: bool, started: float) -> TrainResult:
    checked = check_config(
        config,
        resume=resume,
        model_given=model is not None,
        tokenizer_given=tokenizer is not None,
        in_memory=set(records or {}),
    )
    for index, item in enumerate(checked):
        check_state(item.spec, item.config, config.train, f"data.{index}")
    out = Path(config.train.output_dir).expanduser()
    try:
        accelerator = make_accelerator(config.train)
        if config.train.overwrite_output_dir and not resume:
            if accelerator.is_main_process:
                _clear_output_dir(out)
            accelerator.wait_for_everyone()
        run, resumed_from = prepare_run(
            config, checked, accelerator, model, tokenizer, records, callbacks, resume,
            resume_or_start=resume_or_start, allow_changed_data=allow_changed_data,
        )
        start_step, loop_started = run.step, time.perf_counter()
        metrics, eval_metrics = _train_loop(run, resumed=resumed_from is not None)
        loop_seconds = time.perf_counter() - loop_started
        final_dir = save_final(run, metrics, eval_metrics)
        return TrainResult(
            output_dir=out,
            final_dir=final_dir,
            steps=run.step,
            metrics=metrics,
            eval_metrics=eval_metrics,
            model=run.runtime.model,
            tokenizer=run.runtime.tokenizer,
            checkpoint=run.last_checkpoint,
            resumed_from=resumed_from,
            seconds=time.perf_counter() - started,
            loop_seconds=loop_seconds,
            start_step=start_step,
            source_names=[s.name for s in run.sources],
            health_warnings=tuple(run.health_warnings),
        )
    finally:
        release_accelerator()


def _as_config(config: Config | Mapping[str, Any] | str | Path, overrides: Sequence[str] | None) -> Config:
    if isinstance(config, (str, Path)):
        return load_config(config, overrides)
    if isinstance(config, Config) and not overrides:
        return config
    return config_from_dict(config, overrides)  # type: ignore[arg-type]


def _clear_output_dir(out: Path) -> None:
    for path in ckpt.list_checkpoints(out) + [out / FINAL_DIR]:
        shutil.rmtree(path, ignore_errors=True)
    for name in (ckpt.LATEST, NONFINITE_FILE):
        (out / name).unlink(missing_ok=True)


def _micro_step(run: Run) -> tuple[torch.Tensor, list[SourceOutput]]:
    """Forward every source once; returns the weighted total loss and the outputs."""
    mb = run.config.train.micro_batch_size
    outputs = []
    total = torch.zeros((), device=run.accelerator.device)
    for source in run.sources:
        batch = source.next_batch(mb, run.runtime.pad_id)
        out = source_forward(run.runtime, source, batch, training=True)
        outputs.append(out)
        total = total + source.weight * weighted_mean(out.losses, out.batch)
    return total, outputs


FINITE_KEY = "_finite"  # 1 per micro-step whose total loss is finite; read with the metrics


def _check_finite(run: Run, metrics: dict[str, float], steps: list[tuple[torch.Tensor, list[SourceOutput]]]) -> None:
    """Stop if any micro-step of any process had a non-finite loss. ``metrics[FINITE_KEY]``
    (the mean over micro-steps and processes of the finiteness flags) came back with the
    step's other metrics, so a healthy step costs no extra host read; only a failing one
    looks closer, and no optimizer step has been taken then."""
    if metrics.pop(FINITE_KEY, 1.0) == 1.0:
        return
    local = [bool(torch.isfinite(total)) for total, _ in steps]
    first_bad = local.index(False) if False in local else None
    flags = run.runtime.gather(torch.tensor([first_bad is None], dtype=torch.float32, device=run.accelerator.device))
    micro = first_bad if first_bad is not None else 0
    outputs = steps[micro][1]
    step = run.step + 1
    report: dict[str, Any] = {"step": step, "micro_step": micro, "sources": {}}
    for source, out in zip(run.sources, outputs):
        per_example = out.losses.detach().float().cpu()
        mean = float(per_example.mean())
        report["sources"][source.name] = {
            "loss": mean if math.isfinite(mean) else str(mean),
            "record_ids": out.batch.ids,
            "nonfinite_record_ids": [
                i for i, v in zip(out.batch.ids, per_example.tolist()) if not math.isfinite(v)
            ],
        }
    path = run.out / NONFINITE_FILE
    # The first process with a non-finite micro-batch writes it.
    if int((flags == 0).nonzero()[0]) == run.accelerator.process_index:
        report["process_index"] = run.accelerator.process_index
        path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    bad = {name: info["record_ids"] for name, info in report["sources"].items()}
    sources = report["sources"]
    culprits = {name: info["loss"] for name, info in sources.items() if isinstance(info["loss"], str)}
    raise NonFiniteLossError(
        f"non-finite loss at step {step} (micro-step {micro}); source losses {culprits}; "
        f"record ids {bad}; batch saved to {path}",
        step=step,
        record_ids=bad,
        path=path,
    )


def _add_step_metrics(averager: MetricsAverager, run: Run, outputs: list[SourceOutput], total: torch.Tensor) -> None:
    total = total.detach()
    metrics: dict[str, Any] = {"loss": total, FINITE_KEY: torch.isfinite(total)}
    for source, out in zip(run.sources, outputs):
        metrics[f"loss/{source.name}"] = out.losses.detach().mean()
        for key, value in out.metrics.items():
            metrics[f"{source.name}/{key}"] = value
    averager.add(metrics)
    averager.add_sums(reward_sums(outputs))


def _optimizer_step(run: Run) -> dict[str, float]:
    """One optimizer step. Nothing is read back to the host until every micro-step's
    forward and backward and the gradient clipping are queued; then the metrics, the grad
    norm and the finiteness flags come back in one transfer, and the optimizer steps only
    if every loss was finite."""
    accelerator = run.accelerator
    policy = run.runtime.policy
    averager = MetricsAverager()
    steps = []
    for _ in range(run.config.train.grad_accum):
        # accumulate(): DDP/FSDP skip the gradient all-reduce until the last micro-step, and
        # accelerator.backward divides the loss by grad_accum.
        with accelerator.accumulate(policy):
            total, outputs = _micro_step(run)
            accelerator.backward(total)
        _add_step_metrics(averager, run, outputs, total)
        steps.append((total.detach(), outputs))
    max_norm = run.config.train.max_grad_norm
    grad_norm = accelerator.clip_grad_norm_(policy.parameters(), max_norm if max_norm is not None else math.inf)
    if grad_norm is not None:
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        averager.add({"grad_norm": grad_norm if isinstance(grad_norm, torch.Tensor) else float(grad_norm)})
    metrics = merge_sums(accelerator, averager.sums())
    _check_finite(run, metrics, steps)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    metrics.setdefault("grad_norm", math.nan)
    metrics["lr"] = float(run.scheduler.get_last_lr()[0])
    metrics["epoch"] = run.step / run.per_epoch
    return metrics


def _train_loop(run: Run, *, resumed: bool) -> tuple[dict[str, float], dict[str, float]]:
    from tqdm.auto import tqdm

    train_cfg = run.config.train
    accelerator = run.accelerator
    metrics_logger = MetricsLogger(
        run.out, accelerator, resume_step=run.step if resumed else None, trackers=train_cfg.log_with,
        run_config=config_to_dict(run.config),
    )
    # Rows truncated / rejected by tokenisation, per source: logged with the first step.
    data_counts = {} if resumed else {f"data/{s.name}/{k}": v for s in run.sources for k, v in s.data_counts.items()}
    has_eval = any(s.eval_examples for s in run.sources)
    eval_bs = train_cfg.eval_batch_size or train_cfg.micro_batch_size
    metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    desc = train_cfg.run_name or run.out.name or "train"
    bar = tqdm(total=run.total, initial=run.step, desc=desc, disable=not accelerator.is_local_main_process)
    try:
        with StopRequest() as stop:
            while run.step < run.total:
                metrics = _optimizer_step(run)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4g}")
                for callback in run.callbacks:
                    callback.on_step_end(run.step, metrics)
                last = run.step == run.total
                if run.step % train_cfg.log_every == 0 or last:
                    metrics_logger.log(run.step, {**data_counts, **metrics})
                    data_counts = {}
                    logger.info("step %d/%d %s", run.step, run.total, format_metrics(metrics, _CONSOLE_KEYS))
                if has_eval and ((train_cfg.eval_every and run.step % train_cfg.eval_every == 0) or last):
                    eval_metrics = _evaluate(run, metrics_logger, eval_bs)
                if train_cfg.save_every and (run.step % train_cfg.save_every == 0 or last):
                    save_run(run)
                signum = _agreed_signal(run, stop.signum)
                if signum and not last:
                    _stop_on_signal(run, signum)
            if has_eval and not eval_metrics:
                eval_metrics = _evaluate(run, metrics_logger, eval_bs)
            if accelerator.is_main_process:
                from feedalign.trainers.health import warn_run

                run.health_warnings = warn_run(run.out)
            _flush_reference(run)
    finally:
        bar.close()
        metrics_logger.close()
    return metrics, eval_metrics


def _flush_reference(run: Run) -> None:
    flush = getattr(run.runtime.reference, "flush", None)
    if flush is not None:  # a cached reference writes what it computed
        flush()


def _agreed_signal(run: Run, signum: int | None) -> int:
    """The signal to stop on, the same on every process (the largest number any got)."""
    if run.accelerator.num_processes == 1:
        return signum or 0
    flag = torch.tensor([float(signum or 0)], device=run.accelerator.device)
    return int(run.accelerator.reduce(flag, reduction="max").item())


def _stop_on_signal(run: Run, signum: int) -> None:
    """Checkpoint the step just finished (unless it was just saved) and stop."""
    logger.warning("received signal %d: saving a checkpoint after step %d and stopping", signum, run.step)
    if run.last_checkpoint is None or run.last_checkpoint.name != ckpt.checkpoint_name(run.step):
        save_run(run)
    _flush_reference(run)
    raise TrainingInterrupted(signum, run.step, run.last_checkpoint)


_CONSOLE_KEYS = ("loss", "lr", "grad_norm")


def _evaluate(run: Run, metrics_logger: MetricsLogger, batch_size: int) -> dict[str, float]:
    eval_metrics = evaluate(run.runtime, run.sources, batch_size)
    if run.config.train.eval_generate and run.accelerator.is_main_process:
        from feedalign.trainers.health import log_generation

        eval_metrics.update(log_generation(run))
    metrics_logger.log(run.step, eval_metrics)
    logger.info("eval step %d %s", run.step, format_metrics(eval_metrics))
    for callback in run.callbacks:
        callback.on_evaluate(run.step, eval_metrics)
    return eval_metrics
