"""Building a run: accelerator, data sources, policy, reference, optimizer and schedule."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from feedalign.config.checks import CheckedSource
from feedalign.config.errors import ConfigError
from feedalign.config.schema import Config, TrainConfig
from feedalign.data.errors import FeedbackDataError
from feedalign.data.records import LabeledRecord, PairRecord, ScoredRecord
from feedalign.data.batching import (
    EpochSampler,
    Example,
    examples_from_records,
    split_eval,
    steer_examples,
)
from feedalign.trainers.forward import Source
from feedalign.trainers.reference_samples import kl_samples_of, load_kl_samples, warn_in_batch_kl
from feedalign.trainers.source_data import balanced_hparams, tokenize_options, tokenize_source_or_quarantine
from feedalign.trainers.state import make_margin_source, make_providers

__all__ = ["build_sources", "load_kl_samples", "make_accelerator"]

logger = logging.getLogger("feedalign.train")

_RECORD_TYPES = (PairRecord, LabeledRecord, ScoredRecord)


def mixed_precision(train: TrainConfig) -> str:
    """accelerate's mixed_precision for ``train.precision``; falls back to fp32 (with a
    warning) when the requested type is not available on this machine."""
    cuda = torch.cuda.is_available() and not train.cpu
    bf16_ok = (not cuda) or torch.cuda.is_bf16_supported()
    if train.precision == "auto":
        return "bf16" if cuda and bf16_ok else "no"
    if train.precision == "bf16" and not bf16_ok:
        warnings.warn("train.precision=bf16 is not supported by this GPU; training in fp32", stacklevel=2)
        return "no"
    if train.precision == "fp16" and not cuda:
        warnings.warn("train.precision=fp16 needs a CUDA device; training in fp32", stacklevel=2)
        return "no"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[train.precision]


def launched_processes() -> int:
    """World size set by the launcher (``accelerate launch`` / torchrun), 1 otherwise."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def use_cpu(train: TrainConfig) -> bool:
    """``train.cpu``, or a multi-process launch on a machine without CUDA: accelerate only
    forms a CPU process group (gloo) when told to use the CPU; otherwise every process
    would train alone."""
    return train.cpu or (launched_processes() > 1 and not torch.cuda.is_available())


def deepspeed_on_cpu() -> bool:
    """A multi-process DeepSpeed launch on a machine without CUDA. accelerate enables
    DeepSpeed only for a launch that is not on the CPU; DeepSpeed itself runs on CPU
    processes (its CPU accelerator, collectives over gloo)."""
    asked = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return asked and launched_processes() > 1 and not torch.cuda.is_available()


def make_accelerator(train: TrainConfig) -> Any:
    """The run's Accelerator. The launcher decides the distributed type (DDP, FSDP,
    DeepSpeed: ``accelerate launch --config_file ...``); the feedalign config decides the
    precision and gradient accumulation."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    on_cpu = deepspeed_on_cpu()
    accelerator = Accelerator(
        cpu=use_cpu(train) and not on_cpu,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if on_cpu else None,
        mixed_precision=mixed_precision(train),
        gradient_accumulation_steps=train.grad_accum,
        # The schedule counts optimizer steps of the global batch; accelerate would otherwise
        # step it once per process.
        step_scheduler_with_optimizer=False,
        log_with=list(train.log_with) or None,
        project_dir=train.output_dir,
    )
    if launched_processes() > 1 and accelerator.num_processes == 1:
        raise ConfigError(
            f"launched as one of {launched_processes()} processes but accelerate formed no process group "
            "(a GPU launch on a machine without GPUs?); set train.cpu=true",
            key="train.cpu",
        )
    if not accelerator.is_main_process:  # one console, not one per process
        logger.setLevel(logging.WARNING)
    _check_sharding_honoured(accelerator)
    check_grad_accum(accelerator, train)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        _fill_deepspeed_config(plugin.deepspeed_config, train)
    return accelerator


def _fill_deepspeed_config(ds_config: dict[str, Any], train: TrainConfig) -> None:
    """DeepSpeed clips gradients itself and sizes its batches from its config; fill the
    "auto" entries from the feedalign config (no dataloader goes through prepare())."""
    if ds_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds_config["train_micro_batch_size_per_gpu"] = train.micro_batch_size
    clip = train.max_grad_norm if train.max_grad_norm is not None else 0.0  # 0: no clipping
    if ds_config.get("gradient_clipping", "auto") == "auto":
        ds_config["gradient_clipping"] = clip
    elif float(ds_config["gradient_clipping"]) != clip:
        logger.warning(
            "DeepSpeed clips gradients at %s (its config), not at train.max_grad_norm=%s",
            ds_config["gradient_clipping"], train.max_grad_norm,
        )


def _check_sharding_honoured(accelerator: Any) -> None:
    """accelerate turns FSDP / DeepSpeed on only for GPU-like devices; on CPU processes it
    silently falls back to DDP. Fail instead of training unsharded. Under ZeRO-3, also make
    ``zero3_init_flag: false`` mean what it says (the policy is loaded whole, then sharded)."""
    from accelerate.utils import DistributedType

    from feedalign.trainers.parallel import honour_zero3_init_flag

    asked = [
        name for name, var in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
        if os.environ.get(var, "false").lower() == "true"
    ]
    got = accelerator.distributed_type
    if asked and got not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ConfigError(
            f"launched with {asked[0]}, but accelerate runs {got.value} here: it shards only on GPUs "
            "(or other accelerators), not on CPU processes (train.cpu=true or no GPU); use the DDP "
            "config (examples/accelerate/ddp.yaml) on CPU",
            key="train.cpu",
        )
    honour_zero3_init_flag(accelerator)


def check_grad_accum(accelerator: Any, train: TrainConfig) -> None:
    """The loop runs train.grad_accum micro-steps per optimizer step; accelerate's own
    setting (launch flag, DeepSpeed config) must agree or the loss would be mis-scaled."""
    if accelerator.gradient_accumulation_steps != train.grad_accum:
        raise ConfigError(
            f"accelerate uses gradient_accumulation_steps={accelerator.gradient_accumulation_steps} (from "
            f"`accelerate launch --gradient_accumulation_steps` or the DeepSpeed config) but train.grad_accum="
            f"{train.grad_accum}; set gradient accumulation only in the feedalign config",
            key="train.grad_accum",
        )


def _load_source_records(config: Config, index: int, name: str, given: Any) -> list[Any]:
    from feedalign.data.loaders import load_many, load_records
    from feedalign.data.options import load_options

    source = config.data[index]
    on_invalid = config.train.on_invalid
    quarantine = Path(config.train.output_dir) / "quarantine" / f"{name}.quarantine.jsonl"
    options = load_options(source)
    if given is not None:
        if isinstance(given, Sequence) and all(isinstance(r, _RECORD_TYPES) for r in given):
            return list(given)
        result = load_records(given, on_invalid=on_invalid, quarantine_path=quarantine, kind=source.kind, **options)
    else:
        result = load_many(
            list(source.paths), on_invalid=on_invalid, quarantine_path=quarantine, kind=source.kind, **options
        )
    if result.rejected:
        logger.warning("source %s: %d rows rejected, written to %s", name, len(result.rejected), quarantine)
    for stats in result.per_source:
        logger.info("source %s: %s read as format %s; ignored columns: %s", name, stats.name, stats.format,
                    ", ".join(sorted(stats.ignored_columns)) or "none")
    if result.ties:
        logger.warning("source %s: %d tie records left out (ties: keep feeds them to a tie-aware loss)", name, len(result.ties))
    return list(result.records)


def _filter_objective(records: list[Any], objective: str | None) -> list[Any]:
    """Keep records of ``objective``; records without one are assigned to it."""
    if objective is None:
        return records
    out = []
    for record in records:
        if record.objective is None and not isinstance(record, ScoredRecord):
            out.append(replace(record, objective=objective))
        elif record.objective == objective:
            out.append(record)
    return out


def build_sources(
    config: Config,
    checked: Sequence[CheckedSource],
    tokenizer: Any,
    records: Mapping[str, Any] | None,
    *,
    rank: int,
    world: int,
) -> list[Source]:
    """Load, convert, tokenise and split every source; fails (FeedbackDataError) before
    any model is touched."""
    train = config.train
    sources = []
    for index, item in enumerate(checked):
        given = (records or {}).get(item.name)
        recs = _filter_objective(_load_source_records(config, index, item.name, given), item.config.objective)
        where = item.config.paths[0] if item.config.paths else item.name
        if not recs:
            detail = f"source '{item.name}' has no records (objective filter: {item.config.objective!r})"
            raise FeedbackDataError(where, detail)
        examples = examples_from_records(
            recs, item.spec.feedback, source=item.name, pairing=item.config.pairing, seed=train.seed
        )
        if not examples:
            detail = f"source '{item.name}' gives no examples for a '{item.spec.feedback}' loss"
            raise FeedbackDataError(where, detail)
        check_ties(examples, item.spec, item.name)
        if item.steer is not None:
            examples = steer_examples(examples, item.steer)
            prepare_steer_tokenizer(item.steer, tokenizer, f"data.{index}.steer")
        options = tokenize_options(config, index)
        examples, data_counts = tokenize_source_or_quarantine(config, item.name, examples, tokenizer, options)
        train_ex, eval_ex = split_eval(
            examples, train.eval_fraction, train.seed, stream=index, min_eval=item.spec.min_batch_size
        )
        if item.steer is not None:  # every training pair under steer.draws weights
            from feedalign.multiobjective.draws import redraw_examples

            train_ex = redraw_examples(train_ex, item.steer, tokenizer, options)
        sampler = EpochSampler(len(train_ex), train.seed, stream=index, rank=rank, world=world)
        hparams = balanced_hparams(item, train_ex)
        kl_samples = kl_samples_of(item, index, tokenizer, train, rank=rank, world=world)
        if kl_samples is None:
            warn_in_batch_kl(item, train_ex + eval_ex, f"data.{index}")
        sources.append(
            Source(
                name=item.name,
                index=index,
                spec=item.spec,
                hparams=hparams,
                weight=item.config.weight,
                max_length=options.max_length,
                train_examples=train_ex,
                eval_examples=eval_ex,
                sampler=sampler,
                providers=make_providers(item.spec, item.config, hparams, prefix=f"data.{index}"),
                margin_source=make_margin_source(item.spec, item.config, prefix=f"data.{index}"),
                kl_samples=kl_samples,
                packing=train.packing,
                share_prompt=train.packing and train.share_prompt and kl_samples is None,
                steer=item.steer,
                data_counts=data_counts,
            )
        )
        logger.info(
            "source %s: loss %s (%s), weight %g, %d train / %d eval examples%s",
            item.name, item.spec.name, item.spec.feedback, item.config.weight, len(train_ex), len(eval_ex),
            f", {len(kl_samples.examples)} reference samples for kl" if kl_samples is not None else "",
        )
    return sources


def check_ties(examples: Sequence[Example], spec: Any, name: str) -> None:
    """Tie records (``ties: keep``) only feed a pair loss that takes a ``ties`` input."""
    tie = next((ex for ex in examples if ex.tie), None)
    if tie is not None and not spec.takes("ties"):
        raise FeedbackDataError(
            tie.where or name,
            f"source '{name}' keeps ties (ties: keep) but its loss takes no `ties` input; use a tie-aware "
            "pair loss or ties: drop",
        )


def prepare_steer_tokenizer(spec: Any, tokenizer: Any, key: str) -> None:
    """Add a steering spec's level tokens (``render: tokens``) and check that every prefix
    survives the tokenizer; a prefix that turns into unknown tokens is a ConfigError."""
    spec.prepare(tokenizer)
    try:
        spec.check_tokenizer(tokenizer)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


def prepare_steer_model(specs: Sequence[Any], model: Any, tokenizer: Any, config: Config) -> None:
    """Grow the policy's embeddings for the level tokens the steered sources' ``specs`` added,
    and give it weight adapters if a spec asks for them (before the reference copy and the
    optimizer are made; also for a checkpoint loaded back for generation)."""
    from feedalign.multiobjective.weight_adapters import attach_for_run

    for spec in specs:
        if spec.prepare_model(model, tokenizer):
            logger.info("embeddings grown to %d rows for steering tokens", len(tokenizer))
    try:
        adapters = attach_for_run(specs, model, tokenizer, lora=config.model.lora is not None,
                                  packing=config.train.packing)
    except ValueError as exc:
        raise ConfigError(str(exc), key="steer.adapter_rank") from None
    if adapters is not None:
        logger.info("weight adapters: rank %d per objective on %d linear layers (%d parameters; base frozen)",
                    adapters.rank, len(adapters.deltas), sum(p.numel() for p in adapters.parameters()))


def load_policy(config: Config) -> Any:
    from feedalign.policies.hf import load_causal_lm

    m = config.model
    lora = None
    if m.lora is not None:
        lora = {"r": m.lora.r, "alpha": m.lora.alpha, "dropout": m.lora.dropout}
        if m.lora.target_modules is not None:
            lora["target_modules"] = list(m.lora.target_modules)
    return load_causal_lm(
        m.path,
        dtype=m.dtype,
        lora=lora,
        gradient_checkpointing=m.gradient_checkpointing,
        attn_implementation=policy_attention(config),
    )


def policy_attention(config: Config) -> str | None:
    """``model.attn_implementation``; when unset and ``train.packing`` is on, per-sequence
    attention for the packed rows (``policies.varlen``)."""
    if config.model.attn_implementation is None and config.train.packing:
        from feedalign.policies.varlen import VARLEN_ATTENTION

        return VARLEN_ATTENTION
    return config.model.attn_implementation


def compile_decoder(model: Any) -> Any:
    """``train.compile``: compile the decoder body in place (``Module.compile`` keeps the
    parameter names, so checkpoints and fingerprints are unchanged). ``dynamic=True``: batch
    lengths vary every step. Returns the compiled module."""
    from feedalign.policies.hf import unwrap_model

    base = unwrap_model(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    target = decoder if isinstance(decoder, torch.nn.Module) else base
    target.compile(dynamic=True)
    logger.info("train.compile: %s compiled with torch.compile(dynamic=True); the first steps pay the compile",
                type(target).__name__)
    return target


def pad_id_of(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad batches with")
    return int(pad)


def total_steps(train: TrainConfig, sources: Sequence[Source], world: int) -> tuple[int, int]:
    """(total optimizer steps, steps per epoch of the largest source)."""
    per_step = train.micro_batch_size * train.grad_accum * world
    largest = max(len(s.train_examples) for s in sources)
    per_epoch = max(1, math.ceil(largest / per_step))
    total = train.max_steps if train.max_steps is not None else max(1, math.ceil(train.epochs * per_epoch))
    return total, per_epoch


def adamw_kernel(params: Sequence[torch.nn.Parameter]) -> dict[str, bool]:
    """``fused=True`` when every parameter is a floating-point CUDA tensor (one kernel per
    step instead of several per parameter group; same update up to rounding); torch's
    default (foreach where supported) otherwise, e.g. on a CPU or under a meta/sharded
    placement decided later by the launcher."""
    on_cuda = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return {"fused": True} if on_cuda else {}


def make_optimizer(train: TrainConfig, params: list[torch.nn.Parameter], total: int) -> tuple[Any, Any]:
    from transformers import get_scheduler

    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(
        params, lr=train.lr, betas=train.adam_betas, eps=train.adam_eps, weight_decay=train.weight_decay,
        **adamw_kernel(params),
    )
    warmup = train.warmup_steps or math.ceil(train.warmup_ratio * total)
    name = {"constant": "constant_with_warmup"}.get(train.scheduler, train.scheduler)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    return optimizer, scheduler
