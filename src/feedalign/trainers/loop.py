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
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from feedalign.config.checks import check_config
from feedalign.config.loader import config_from_dict, config_to_dict, dump_config, load_config
from feedalign.config.schema import Config
from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers.forward import SourceOutput, evaluate, reward_sums, source_forward
from feedalign.trainers.logging import MetricsAverager, MetricsLogger, format_metrics
from feedalign.trainers.parallel import full_state_dict, merge_sums, sharding
from feedalign.trainers.run import Run, TrainerCallback, prepare_run, release_accelerator, save_run
from feedalign.trainers.setup import make_accelerator
from feedalign.trainers.state import check_state

logger = logging.getLogger("feedalign.train")

NONFINITE_FILE = "nonfinite_batch.json"
FINAL_DIR = "final"


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
        resume: continue from the newest complete checkpoint in ``train.output_dir`` (a run
            without one starts from scratch).

    Raises:
        ConfigError, FeedbackDataError: before any training step.
        NonFiniteLossError: the loss became NaN/inf (batch saved to nonfinite_batch.json).
    """
    config = _as_config(config, overrides)
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
            config, checked, accelerator, model, tokenizer, records, callbacks, resume
        )
        metrics, eval_metrics = _train_loop(run, resumed=resumed_from is not None)
        final_dir = _save_final(run, metrics, eval_metrics)
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
        total = total + source.weight * out.losses.mean()
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
        if has_eval and not eval_metrics:
            eval_metrics = _evaluate(run, metrics_logger, eval_bs)
        if accelerator.is_main_process:
            from feedalign.trainers.health import warn_run

            run.health_warnings = warn_run(run.out)
        flush = getattr(run.runtime.reference, "flush", None)
        if flush is not None:  # a cached reference writes what it computed
            flush()
    finally:
        bar.close()
        metrics_logger.close()
    return metrics, eval_metrics


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


def _save_steering_spec(run: Run, directory: Path) -> None:
    """A steered run's SteeringSpec next to the model, for ``feedalign steer`` / ``front``."""
    from feedalign.multiobjective.steering import save_spec

    specs = [s.steer for s in run.sources if s.steer is not None]
    if not specs:
        return
    if any(spec != specs[0] for spec in specs[1:]):
        logger.warning("steered sources use different steering specs; final/ holds the first one's")
    save_spec(specs[0], directory)


def _save_final(run: Run, metrics: Mapping[str, float] | None = None,
                eval_metrics: Mapping[str, float] | None = None) -> Path | None:
    """``output_dir/final``: save_pretrained (the adapter for LoRA) + tokenizer + config.
    Under FSDP/DeepSpeed the full weights are gathered first (every process takes part)."""
    accelerator = run.accelerator
    final = run.out / FINAL_DIR
    accelerator.wait_for_everyone()
    model = run.runtime.model
    state = None
    if sharding(accelerator) != "none":
        state = full_state_dict(accelerator, run.runtime.policy, model)
    if accelerator.is_main_process:
        tmp = run.out / f"{FINAL_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if state is None:
            model.save_pretrained(str(tmp))
        else:
            model.save_pretrained(str(tmp), state_dict=state)
        run.runtime.tokenizer.save_pretrained(str(tmp))
        (tmp / "feedalign_config.yaml").write_text(dump_config(run.config), encoding="utf-8")
        _save_steering_spec(run, tmp)
        from feedalign.trainers.card import write_final_extras

        write_final_extras(run, tmp, metrics or {}, eval_metrics or {})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    return final
