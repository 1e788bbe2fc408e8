"""A run in progress: its parts, how it is built, saved to and restored from a checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from feedalign.config.errors import ConfigError
from feedalign.config.loader import dump_config
from feedalign.config.schema import Config
from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers.forward import Runtime, Source
from feedalign.trainers.setup import build_sources, load_policy, make_optimizer, pad_id_of, total_steps

logger = logging.getLogger("feedalign.train")


class TrainerCallback:
    """Hooks into the loop; override what you need. Raising from a hook stops training."""

    def on_step_end(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def on_evaluate(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def on_save(self, step: int, path: Path) -> None: ...


@dataclass
class Run:
    """Everything the loop works on; ``step`` counts completed optimizer steps."""

    config: Config
    accelerator: Any
    runtime: Runtime
    sources: list[Source]
    optimizer: Any
    scheduler: Any
    params: list[torch.nn.Parameter]
    total: int
    per_epoch: int
    out: Path
    callbacks: Sequence[TrainerCallback]
    step: int = 0
    last_checkpoint: Path | None = None


def release_accelerator() -> None:
    # accelerate keeps process-wide singletons; forget the per-run part so a later run in
    # the same process may use other settings (e.g. another precision).
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def prepare_run(
    config: Config,
    checked: Sequence[Any],
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    records: Any,
    callbacks: Sequence[TrainerCallback] | None,
    resume: bool,
) -> tuple[Run, Path | None]:
    """Tokenizer, data, policy, reference, optimizer and schedule; then the checkpoint to
    resume from (if asked for and one is complete), restored into all of them."""
    from accelerate.utils import set_seed

    from feedalign.policies.hf import load_tokenizer
    from feedalign.policies.reference import make_reference

    train_cfg = config.train
    set_seed(train_cfg.seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(config.model.tokenizer or config.model.path)
    world, rank = accelerator.num_processes, accelerator.process_index
    sources = build_sources(config, checked, tokenizer, records, rank=rank, world=world)
    if model is None:
        model = load_policy(config)
    model.to(accelerator.device)
    model.train()
    reference = None
    if any(s.spec.needs_reference for s in sources):
        # Taken before any checkpoint is restored: the reference is the initial policy.
        reference = make_reference(
            config.reference.strategy,
            model,
            cache_dir=config.reference.cache_dir,
            chunk_size=train_cfg.logps_chunk_size,
        )
    params = [p for p in model.parameters() if p.requires_grad]
    total, per_epoch = total_steps(train_cfg, sources, world)
    optimizer, scheduler = make_optimizer(train_cfg, params, total)
    optimizer = accelerator.prepare(optimizer)
    pad_id = pad_id_of(tokenizer)
    runtime = Runtime(accelerator, model, reference, tokenizer, pad_id, train_cfg.logps_chunk_size)
    out = Path(train_cfg.output_dir).expanduser()
    run = Run(config, accelerator, runtime, sources, optimizer, scheduler, params, total, per_epoch, out,
              callbacks or ())
    resumed_from = ckpt.find_resume_checkpoint(out) if resume else None
    if resume and resumed_from is None:
        logger.warning("--resume: no complete checkpoint in %s; starting from scratch", out)
    if accelerator.is_main_process:
        ckpt.remove_incomplete(out)
    if resumed_from is not None:
        restore_run(run, resumed_from)
    return run, resumed_from


def restore_run(run: Run, path: Path) -> None:
    """Load a checkpoint into the run. A checkpoint that does not fit the run (other data,
    LoRA switched on or off, ...) is a ConfigError naming what differs."""
    payload = ckpt.load_checkpoint(path)
    changed = config_changes(payload.config_yaml, dump_config(run.config))
    if changed:
        logger.warning("resuming with settings that differ from the checkpoint's: %s", ", ".join(changed[:10]))
    try:
        ckpt.load_trainable_state(run.runtime.model, payload.weights)
        run.optimizer.load_state_dict(payload.optimizer)
        run.scheduler.load_state_dict(payload.scheduler)
        state = payload.state
        for source in run.sources:
            source.sampler.load_state_dict(state["samplers"][source.name])
            for name, provider in source.providers.items():
                provider.load_state_dict(state["providers"][source.name][name])
    except (ValueError, KeyError) as exc:
        detail = f"cannot resume from {path}: {exc!r}; changed settings: {changed or 'none'}"
        raise ConfigError(detail, key="train.output_dir") from None
    if state.get("scaler") is not None and run.accelerator.scaler is not None:
        run.accelerator.scaler.load_state_dict(state["scaler"])
    ckpt.set_rng_state(state["rng"])
    run.step = payload.step
    run.last_checkpoint = path
    logger.info("resumed from %s (step %d)", path, payload.step)


def save_run(run: Run) -> Path | None:
    accelerator = run.accelerator
    path = None
    if accelerator.is_main_process:
        state = {
            "rng": ckpt.rng_state(),
            "samplers": {s.name: s.sampler.state_dict() for s in run.sources},
            "providers": {s.name: {n: p.state_dict() for n, p in s.providers.items()} for s in run.sources},
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
        }
        trainer_state = {
            "step": run.step,
            "total_steps": run.total,
            "samplers": state["samplers"],
            "providers": state["providers"],
        }
        payload = ckpt.CheckpointPayload(
            step=run.step,
            weights=ckpt.trainable_state(run.runtime.model),
            optimizer=run.optimizer.state_dict(),
            scheduler=run.scheduler.state_dict(),
            state=state,
            trainer_state=trainer_state,
            config_yaml=dump_config(run.config),
        )
        path = ckpt.save_checkpoint(run.out, payload, keep=run.config.train.keep_checkpoints)
        run.last_checkpoint = path
        for callback in run.callbacks:
            callback.on_save(run.step, path)
    accelerator.wait_for_everyone()
    return path


def config_changes(saved_yaml: str, current_yaml: str) -> list[str]:
    """Dotted keys whose values differ between two dumped configs."""
    import yaml

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                out.update(flat(value, f"{prefix}{key}."))
            return out
        if isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
            out = {}
            for i, value in enumerate(node):
                out.update(flat(value, f"{prefix}{i}."))
            return out
        return {prefix.rstrip("."): node}

    saved, current = flat(yaml.safe_load(saved_yaml)), flat(yaml.safe_load(current_yaml))
    return sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
