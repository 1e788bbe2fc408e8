"""A run in progress: its parts, how it is built, saved to and restored from a checkpoint."""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from feedalign.config.errors import ConfigError
from feedalign.config.loader import dump_config
from feedalign.config.schema import Config
from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers import resume as resume_checks
from feedalign.data.batching import Batch, collate, collate_texts, move_to
from feedalign.policies.reference import bind_reference, make_run_reference
from feedalign.trainers.forward import Runtime, Source
from feedalign.trainers.model_checks import check_lora_targets
from feedalign.trainers.parallel import (
    LogpsModule,
    check_reference_strategy,
    is_zero3,
    load_optimizer_state,
    load_trainable_weights,
    eval_shards,
    optimizer_state,
    sharding,
    trainable_weights,
)
from feedalign.trainers.setup import (
    build_sources,
    check_grad_accum,
    compile_decoder,
    load_policy,
    make_optimizer,
    pad_id_of,
    prepare_steer_model,
    total_steps,
)

logger = logging.getLogger("feedalign.train")

DEEPSPEED_DIR = "deepspeed"  # accelerator.save_state inside a checkpoint (DeepSpeed runs)


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
    trainable: list[str]  # names of the parameters that train (what a checkpoint holds)
    total: int
    per_epoch: int
    out: Path
    callbacks: Sequence[TrainerCallback]
    step: int = 0
    last_checkpoint: Path | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)  # per source, see trainers.resume
    config_history: list[dict[str, Any]] = field(default_factory=list)  # each resume's changed settings
    health_warnings: list[str] = field(default_factory=list)  # trainers.health, in the model card


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
    *,
    resume_or_start: bool = False,
    allow_changed_data: bool = False,
) -> tuple[Run, Path | None]:
    """Tokenizer, data, policy, reference, optimizer and schedule; then the checkpoint to
    resume from (if asked for), restored into all of them. ``resume`` without a usable
    checkpoint is a ConfigError unless ``resume_or_start``."""
    from accelerate.utils import set_seed

    from feedalign.policies.hf import load_tokenizer

    from feedalign.policies.hf import set_threads

    train_cfg = config.train
    logger.info("torch threads: %d", set_threads(train_cfg.threads))
    set_seed(train_cfg.seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(config.model.tokenizer or config.model.path)
    world, rank = accelerator.num_processes, accelerator.process_index
    sources = build_sources(config, checked, tokenizer, records, rank=rank, world=world)
    if model is None:
        model = load_policy(config)
        check_lora_targets(config, model)  # peft skips unmatched names silently
    prepare_steer_model([s.steer for s in sources if s.steer is not None], model, tokenizer, config)
    if sharding(accelerator) == "none":
        model.to(accelerator.device)  # FSDP / DeepSpeed place the shards themselves
    model.train()
    if not config.model.dropout:
        from feedalign.policies.hf import disable_dropout

        disable_dropout(model)  # before the reference copy: it inherits the same modules
    reference = None
    if any(s.spec.needs_reference or s.kl_samples is not None for s in sources):
        check_reference_strategy(accelerator, config.reference.strategy, model)
        # Taken before any checkpoint is restored and before the policy is wrapped or
        # sharded: the reference is the initial policy.
        reference = make_run_reference(
            config.reference.strategy,
            model,
            cache_dir=config.reference.cache_dir,
            chunk_size=train_cfg.logps_chunk_size,
            device=accelerator.device,
        )
    if train_cfg.compile:  # after the reference copy: the copy runs eagerly
        compile_decoder(model)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    total, per_epoch = total_steps(train_cfg, sources, world)
    optimizer, scheduler = make_optimizer(train_cfg, [p for p in model.parameters() if p.requires_grad], total)
    policy = LogpsModule(model, train_cfg.logps_chunk_size, head_as_module=is_zero3(accelerator))
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    check_grad_accum(accelerator, train_cfg)
    bind_reference(reference, policy)
    pad_id = pad_id_of(tokenizer)
    runtime = Runtime(accelerator, model, reference, tokenizer, pad_id, train_cfg.logps_chunk_size, policy)
    out = Path(train_cfg.output_dir).expanduser()
    run = Run(config, accelerator, runtime, sources, optimizer, scheduler, trainable, total, per_epoch, out,
              callbacks or ())
    resumed_from = _resume(run, resume, resume_or_start, allow_changed_data)
    precompute_reference(run)
    return run, resumed_from


def _resume(run: Run, resume: bool, resume_or_start: bool, allow_changed_data: bool) -> Path | None:
    """Fingerprint the data, drop leftovers of interrupted saves, restore the checkpoint."""
    run.fingerprints = {s.name: resume_checks.source_fingerprint(s.train_examples + s.eval_examples)
                        for s in run.sources}
    resumed_from = _resume_checkpoint(run.out, resume, resume_or_start)
    if run.accelerator.is_main_process:
        ckpt.remove_incomplete(run.out)
    run.accelerator.wait_for_everyone()
    if resumed_from is not None:
        restore_run(run, resumed_from, allow_changed_data=allow_changed_data)
    return resumed_from


def _resume_checkpoint(out: Path, resume: bool, resume_or_start: bool) -> Path | None:
    if not (resume or resume_or_start):
        return None
    found = ckpt.find_resume_checkpoint(out)
    if found is not None:
        return found
    existing = ckpt.list_checkpoints(out)
    if not resume_or_start:
        what = f"none of its {len(existing)} checkpoints is usable (see the warnings above)" if existing else (
            "it holds no complete checkpoint")
        raise ConfigError(f"--resume: {what}; pass --resume-or-start to train from scratch instead",
                          key="train.output_dir")
    logger.warning("--resume-or-start: no usable checkpoint in %s; starting from scratch", out)
    return None


def precompute_reference(run: Run) -> int:
    """Fill a ``cached`` reference before the first step, then free its model copy.

    Replays, on copies of the seeded samplers, every micro-batch the rest of the run will ask
    reference log-probs for (training from the current step, evaluation, ``kl_samples``,
    KTO's rotated ``kl_ref`` rows), in the SAME batches the loop builds, so every value is
    bitwise what the lazy path would compute. Rows already on disk (a resumed run, a second
    run over the same data) are hits and cost a hash each. Afterwards a copy reference is
    dropped (``CachedReference.drop_inner``): no second model stays in memory while training,
    and a row the replay missed fails with ``CacheMissError`` instead of silently running
    the reference. A LoRA policy's cache (adapter reference: the policy itself, no extra
    memory) is filled up front too when there is one process (the adapter reference stays:
    it is the policy); with several it is left to fill lazily: its forwards go through the
    DDP/FSDP-wrapped policy, and skipping rank-dependent hits there could leave processes
    out of step.

    Each process replays its own slice, so its cache holds what it will read. Returns the
    number of newly computed rows (0 when there is nothing to do).
    """
    from feedalign.policies.reference import CachedReference, CopyReference
    from feedalign.policies.reference import PolicyAdapterReference

    reference = run.runtime.reference
    if not isinstance(reference, CachedReference):
        return 0
    copy_inner = isinstance(reference.inner, CopyReference)
    single_adapter = isinstance(reference.inner, PolicyAdapterReference) and run.accelerator.num_processes == 1
    if not (copy_inner or single_adapter):
        return 0
    from tqdm.auto import tqdm

    device = run.accelerator.device
    batches = tqdm(((move_to(tensors, device), row_ids) for tensors, row_ids in _reference_rows(run)),
                   desc="reference cache", unit="batch", leave=False,
                   disable=not run.accelerator.is_local_main_process)
    with run.accelerator.autocast():
        computed = reference.precompute(batches)
    if copy_inner:
        reference.drop_inner()
    logger.info("reference cache: %d rows computed before training, %d cached", computed, len(reference))
    return computed


def _reference_rows(run: Run) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """(padded tensors, row ids) of every reference lookup the rest of the run makes, in the
    loop's own batches (mirrors ``forward._logps`` and ``_eval_source``)."""
    train_cfg, pad_id = run.config.train, run.runtime.pad_id
    micro_steps = max(0, run.total - run.step) * train_cfg.grad_accum
    eval_bs = train_cfg.eval_batch_size or train_cfg.micro_batch_size
    world, rank = run.accelerator.num_processes, run.accelerator.process_index
    for source in run.sources:
        if not (source.spec.needs_reference or source.kl_samples is not None):
            continue
        replay = replace(source, sampler=copy.deepcopy(source.sampler))
        if source.kl_samples is not None:
            replay.kl_samples = replace(source.kl_samples, sampler=copy.deepcopy(source.kl_samples.sampler))
        for _ in range(micro_steps):
            yield from _batch_rows(run, replay, replay.next_batch(train_cfg.micro_batch_size, pad_id), True)
        min_size = source.spec.min_batch_size
        for marked in eval_shards(len(source.eval_examples), eval_bs, world=world, rank=rank, min_size=min_size):
            examples = [source.eval_examples[i if i >= 0 else -1 - i] for i in marked]
            batch = collate(examples, source.feedback, pad_id, packing=source.packing, share_prompt=source.share_prompt)
            yield from _batch_rows(run, replay, batch, False)


def _batch_rows(run: Run, source: Source, batch: Batch, training: bool) -> Iterator[tuple[dict[str, Any], list[str]]]:
    from feedalign.trainers.forward import reference_rows
    from feedalign.trainers.state import TrainerStateContext, mismatched_rows

    kl_batch = source.kl_samples.next_batch(run.runtime.pad_id, training=training) if source.kl_samples else None
    if source.spec.needs_reference or kl_batch is not None:
        yield reference_rows(batch, kl_batch, run.runtime.pad_id)
    # The rows the loss's state providers score for this batch (their own choice of rows).
    ctx = TrainerStateContext(batch, source.feedback, None, None, None, training)  # type: ignore[arg-type]
    for prompts, completions, ids in mismatched_rows(source.providers, ctx):
        yield collate_texts(run.runtime.tokenizer, prompts, completions, source.max_length, run.runtime.pad_id), ids


def restore_run(run: Run, path: Path, *, allow_changed_data: bool = False) -> None:
    """Load a checkpoint into the run (every process reads it). A checkpoint that does not
    fit the run (other data, LoRA switched on or off, other sharding, settings that cannot
    change, ...) is a ConfigError naming what differs; see ``trainers.resume``."""
    accelerator, runtime = run.accelerator, run.runtime
    payload = ckpt.load_checkpoint(path)
    diff = resume_checks.config_diff(payload.config_yaml, dump_config(run.config))
    changed = sorted(diff)
    resume_checks.check_changes(diff, path, step=payload.step, total=run.total)
    saved_prints = payload.trainer_state.get("data_fingerprints")
    resume_checks.check_fingerprints(saved_prints, run.fingerprints, allow=allow_changed_data, path=path,
                                     changed=changed)
    try:
        load_trainable_weights(accelerator, runtime.policy, runtime.model, payload.weights)
        if sharding(accelerator) == "deepspeed":
            accelerator.load_state(str(path / DEEPSPEED_DIR))
        else:
            load_optimizer_state(accelerator, runtime.policy, run.optimizer, payload.optimizer)
        run.scheduler.load_state_dict(payload.scheduler)
        state = payload.state
        for source in run.sources:
            source.sampler.load_state_dict(state["samplers"][source.name])
            for name, provider in source.providers.items():
                provider.load_state_dict(state["providers"][source.name][name])
            if source.kl_samples is not None:
                source.kl_samples.sampler.load_state_dict(state["kl_samplers"][source.name])
    except (ValueError, KeyError) as exc:
        detail = f"cannot resume from {path}: {exc!r}; changed settings: {changed or 'none'}"
        raise ConfigError(detail, key="train.output_dir") from None
    if state.get("scaler") is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(state["scaler"])
    own = ckpt.load_rank_rng(path, accelerator.process_index)
    if own is None and accelerator.process_index > 0:  # saved by a run with fewer processes
        logger.warning("no RNG state for process %d in %s; using process 0's", accelerator.process_index, path)
    ckpt.set_rng_state(own if own is not None else state["rng"])
    run.step = payload.step
    run.last_checkpoint = path
    resume_checks.apply_changes(run, diff, payload.trainer_state.get("total_steps"))
    run.config_history = list(payload.trainer_state.get("config_history", []))
    if diff:
        run.config_history.append({"step": run.step, "changed": {k: list(v) for k, v in diff.items()}})
    logger.info("resumed from %s (step %d)", path, payload.step)


def save_run(run: Run) -> Path:
    """Write a checkpoint. Every process takes part: sharded weights and optimizer state are
    gathered, and each process saves its own RNG state (``rng_state_<rank>.pt``); the main
    process writes the rest and makes the checkpoint complete.

    Raises:
        CheckpointWriteError: the disk is full or another OS error stopped the write; the
            partial checkpoint is removed, the previous one (``latest``) is untouched.
    """
    try:
        return _write_run(run)
    except (OSError, RuntimeError) as exc:
        if not ckpt.is_write_failure(exc):
            raise
        shutil.rmtree(ckpt.staging_dir(run.out, run.step), ignore_errors=True)
        raise ckpt.write_failure(exc, run.out, ckpt.checkpoint_name(run.step), run.last_checkpoint) from exc


def _write_run(run: Run) -> Path:
    accelerator, runtime = run.accelerator, run.runtime
    accelerator.wait_for_everyone()
    weights = trainable_weights(accelerator, runtime.policy, runtime.model, run.trainable)
    optimizer = optimizer_state(accelerator, runtime.policy, run.optimizer)
    staging = ckpt.staging_dir(run.out, run.step)
    if accelerator.is_main_process:
        ckpt.begin_checkpoint(run.out, run.step)
    accelerator.wait_for_everyone()
    ckpt.save_rank_rng(staging, accelerator.process_index)
    if sharding(accelerator) == "deepspeed":
        accelerator.save_state(str(staging / DEEPSPEED_DIR))
    accelerator.wait_for_everyone()
    path = run.out / ckpt.checkpoint_name(run.step)
    if accelerator.is_main_process:
        samplers = {s.name: s.sampler.state_dict() for s in run.sources}
        providers = {s.name: {n: p.state_dict() for n, p in s.providers.items()} for s in run.sources}
        kl_samplers = {s.name: s.kl_samples.sampler.state_dict() for s in run.sources if s.kl_samples is not None}
        state = {
            "rng": ckpt.rng_state(),
            "samplers": samplers,
            "providers": providers,
            "kl_samplers": kl_samplers,
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
        }
        trainer_state = {
            "step": run.step,
            "total_steps": run.total,
            "num_processes": accelerator.num_processes,
            "samplers": samplers,
            "providers": providers,
            "kl_samplers": kl_samplers,
            "data_fingerprints": run.fingerprints,
            "config_history": run.config_history,
        }
        payload = ckpt.CheckpointPayload(
            step=run.step,
            weights=weights,
            optimizer=optimizer,
            scheduler=run.scheduler.state_dict(),
            state=state,
            trainer_state=trainer_state,
            config_yaml=dump_config(run.config),
        )
        path = ckpt.save_checkpoint(run.out, payload, keep=run.config.train.keep_checkpoints, staged=True)
    accelerator.wait_for_everyone()
    run.last_checkpoint = path
    if accelerator.is_main_process:
        for callback in run.callbacks:
            callback.on_save(run.step, path)
    return path


def config_changes(saved_yaml: str, current_yaml: str) -> list[str]:
    """Dotted keys whose values differ between two dumped configs."""
    return sorted(resume_checks.config_diff(saved_yaml, current_yaml))
