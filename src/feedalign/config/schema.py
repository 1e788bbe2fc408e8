"""Training configuration: one frozen dataclass per component, validated on construction.

Only value ranges and choices are checked here (no file system, no imports of torch or the
loss registry); :func:`feedalign.config.checks.check_config` does the checks that look at the
world (paths, loss names, hyperparameters) just before training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any  # noqa: F401 (annotations are resolved in this namespace)

from feedalign.config.errors import check_choice as _choice, require as _require
from feedalign.config.sources import (  # noqa: F401 (re-exported: one schema)
    PAIRINGS,
    RECORD_KINDS,
    DataSourceConfig,
    MarginsConfig,
    check_lengths as _check_lengths,
)

DTYPES = ("auto", "float32", "bfloat16", "float16")
REFERENCE_STRATEGIES = ("copy", "adapter", "cached", "none")
SCHEDULERS = ("constant", "linear", "cosine")
OPTIMIZERS = ("adamw",)
TRACKERS = ("tensorboard", "wandb", "mlflow")
ON_INVALID = ("error", "quarantine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# One vocabulary for number formats: model.dtype and train.precision take either spelling.
_DTYPE_OF_PRECISION = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_PRECISION_OF_DTYPE = {v: k for k, v in _DTYPE_OF_PRECISION.items()}


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapter settings (peft). ``target_modules`` None lets peft pick per architecture.

    Attributes:
        r: rank of the adapter matrices.
        alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter's input, in [0, 1).
        target_modules: module names to adapt (e.g. [q_proj, v_proj]); null: peft's default for the architecture.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _require(self.r >= 1, "r", f"must be >= 1, got {self.r}")
        _require(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        _require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ModelConfig:
    """The policy to train. ``path`` is a local directory or a hub id; ``tokenizer`` defaults
    to ``path``.

    Attributes:
        path: the policy's model directory or hub id (a local directory when offline).
        tokenizer: tokenizer directory or hub id; null: the model's own (``path``).
        dtype: weight dtype when loading: auto, float32, bfloat16 or float16 (fp32, bf16, fp16 also accepted).
        lora: LoRA adapter settings; null trains every parameter.
        gradient_checkpointing: recompute activations in backward (less memory, slower steps).
        attn_implementation: attention kernel passed to transformers (sdpa, eager, ...); null: default.
        dropout: keep the model's dropout on while training (default off; LoRA dropout is lora.dropout).
    """

    path: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"
    lora: LoraConfig | None = None
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    # Model dropout while training: off by default (policy, reference and evaluation then see
    # the same deterministic network); LoRA dropout is set separately (lora.dropout).
    dropout: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", _DTYPE_OF_PRECISION.get(self.dtype, self.dtype))
        _choice(self.dtype, DTYPES + tuple(_DTYPE_OF_PRECISION), "dtype")
        _require(isinstance(self.dropout, bool), "dropout", f"must be true or false, got {self.dropout!r}")


@dataclass(frozen=True)
class ReferenceConfig:
    """Where reference log-probs come from: a frozen ``copy`` of the initial policy, the
    policy with its LoRA ``adapter`` disabled, a ``cached`` precomputation in ``cache_dir``,
    or ``none`` (only for losses that need no reference).

    Attributes:
        strategy: where reference log-probs come from: copy, adapter, cached or none.
        cache_dir: directory of the reference log-prob cache (required for cached).
    """

    strategy: str = "copy"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        _choice(self.strategy, REFERENCE_STRATEGIES, "strategy")
        if self.strategy == "cached":
            _require(self.cache_dir is not None, "cache_dir", "is required for strategy 'cached'")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, evaluation, checkpointing and logging settings.

    Steps: ``max_steps`` optimizer steps if set, else ``epochs`` passes over the LARGEST
    source (smaller sources cycle). Each optimizer step takes ``grad_accum`` micro-steps;
    each micro-step draws ``micro_batch_size`` examples from EVERY source. ``run_name``
    labels the progress bar (default: the last component of ``output_dir``).

    ``compile`` runs the policy's decoder (the transformer body, not the LM head, whose
    log-probs are computed in chunks) under ``torch.compile(dynamic=True)``. It pays on long
    runs only: the first compile takes tens of seconds to minutes (measured on a CPU: ~5 min
    with a cold cache, 25-45 s warm, for a 4-layer model), and each new batch shape may
    recompile once; the measured steady-state gain was ~1.05-1.10x on a CPU.

    ``packing`` collates each micro-batch padding-free: all its rows (chosen then rejected
    for pairs) back to back in one row, no pad tokens computed. Attention stays within each
    sequence: with ``model.attn_implementation`` unset the policy is loaded with
    ``feedalign_varlen`` (flash variable-length kernel on a GPU in bf16, per-sequence SDPA
    elsewhere); ``sdpa``/``eager`` derive a block-diagonal mask from the position ids
    (correct, S^2 memory) and flash-attention implementations use the sequence boundaries.
    Losses and gradients equal the padded path's up to floating-point summation order.

    ``share_prompt`` (with ``packing``): a pair source runs each pair's prompt once, as
    ``prompt, chosen, rejected`` in the packed row, the rejected tokens attending to the
    prompt but not to the chosen tokens (``data.shared_prompt``); same log-probs and
    gradients as unshared packing. Not for sources with reference samples (``kl_samples``).

    Attributes:
        output_dir: directory for checkpoints, metrics.jsonl, final/ and the run's lock file.
        run_name: label of the progress bar; null: the last component of output_dir.
        seed: seed of sampling, evaluation split and initialisation noise.
        lr: peak learning rate.
        optimizer: the optimizer (adamw).
        weight_decay: AdamW decoupled weight decay.
        adam_betas: AdamW (beta1, beta2).
        adam_eps: AdamW epsilon.
        scheduler: learning-rate schedule after warmup: constant, linear or cosine.
        warmup_steps: linear warmup steps (wins over warmup_ratio when > 0).
        warmup_ratio: warmup as a fraction of the total steps.
        micro_batch_size: examples drawn from EVERY source per micro-step (per process).
        grad_accum: micro-steps per optimizer step.
        max_steps: optimizer steps to train; null: epochs decides.
        epochs: passes over the largest source when max_steps is null.
        max_grad_norm: clip the gradient norm to this; null: no clipping.
        eval_fraction: fraction of each source held out for evaluation, in [0, 1).
        eval_every: evaluate every N steps (0: only at the end).
        eval_batch_size: evaluation batch size; null: micro_batch_size.
        save_every: checkpoint every N steps and at the end (0: no checkpoints).
        keep_checkpoints: newest checkpoints kept (0: all).
        log_every: write metrics every N steps.
        log_with: trackers to log to as well: tensorboard, wandb, mlflow.
        on_invalid: an invalid data row: error (stop) or quarantine (skip and record it).
        precision: compute precision: auto, fp32, bf16 or fp16 (float32, bfloat16, float16 also accepted).
        logps_chunk_size: tokens per chunk when computing log-probs (memory vs speed).
        cpu: train on the CPU even when an accelerator is present.
        overwrite_output_dir: start over in an output_dir that holds an earlier run's checkpoints.
        compile: run the decoder under torch.compile (pays on long runs only).
        packing: padding-free micro-batches (sequences back to back).
        share_prompt: with packing, run each pair's prompt once (prompt, chosen, rejected in one row).
        max_length: token budget (prompt + completion) of every source that sets none.
        max_prompt_length: cap on prompt tokens (cut from the left); null: only max_length limits it.
        min_prompt_length: fewest prompt tokens a row may keep; rows that cannot fit are rejected.
        threads: CPU threads for torch; null: half the usable cores, between 1 and 8.
        eval_generate: held-out prompts sampled at each evaluation (health/* metrics, samples.jsonl).
        eval_max_new_tokens: length limit of those samples.
        eval_judge: "module:function" scoring (prompts, completions) at each evaluation; null: none.
    """

    output_dir: str
    run_name: str | None = None
    seed: int = 0
    lr: float = 1e-5
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    scheduler: str = "constant"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    micro_batch_size: int = 4
    grad_accum: int = 1
    max_steps: int | None = None
    epochs: float = 1.0
    max_grad_norm: float | None = 1.0
    eval_fraction: float = 0.0
    eval_every: int = 0
    eval_batch_size: int | None = None
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    log_with: tuple[str, ...] = ()
    on_invalid: str = "error"
    precision: str = "auto"
    logps_chunk_size: int = 1024
    cpu: bool = False
    overwrite_output_dir: bool = False
    compile: bool = False
    packing: bool = False
    share_prompt: bool = True
    # Token budget of every source that sets none (see DataSourceConfig / data.collate).
    max_length: int = 512
    max_prompt_length: int | None = None
    min_prompt_length: int = 8
    # CPU threads for torch (None: feedalign.policies.hf.default_threads()).
    threads: int | None = None
    # Health at every evaluation (trainers/health.py): sample this many held-out prompts,
    # log distinct-n, repetition, the KL to the reference and eval_judge ("module:function").
    eval_generate: int = 0
    eval_max_new_tokens: int = 64
    eval_judge: str | None = None

    def __post_init__(self) -> None:
        _check_lengths(self)
        if self.threads is not None:
            _require(self.threads >= 1, "threads", f"must be >= 1 or null, got {self.threads}")
        _require(self.eval_generate >= 0, "eval_generate", f"must be >= 0, got {self.eval_generate}")
        _require(self.eval_max_new_tokens >= 1, "eval_max_new_tokens", f"must be >= 1, got {self.eval_max_new_tokens}")
        if self.eval_judge is not None:
            ok = self.eval_judge.count(":") == 1
            _require(ok, "eval_judge", f"must look like 'package.module:function', got {self.eval_judge!r}")
        _require(bool(self.output_dir), "output_dir", "must be a directory path")
        if self.run_name is not None:
            _require(bool(self.run_name.strip()), "run_name", "must be a non-empty name or null")
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _choice(self.optimizer, OPTIMIZERS, "optimizer")
        decay = self.weight_decay
        _require(decay >= 0, "weight_decay", f"must be >= 0, got {decay}")
        ok = len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas)
        _require(ok, "adam_betas", f"must be two numbers in [0, 1), got {self.adam_betas}")
        _require(self.adam_eps > 0, "adam_eps", f"must be > 0, got {self.adam_eps}")
        _choice(self.scheduler, SCHEDULERS, "scheduler")
        warmup = self.warmup_steps
        _require(warmup >= 0, "warmup_steps", f"must be >= 0, got {warmup}")
        ratio = self.warmup_ratio
        _require(0 <= ratio < 1, "warmup_ratio", f"must be in [0, 1), got {ratio}")
        for key in ("micro_batch_size", "grad_accum", "log_every", "logps_chunk_size"):
            _require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        if self.max_steps is not None:
            _require(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        _require(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        if self.max_grad_norm is not None:
            norm = self.max_grad_norm
            _require(norm > 0, "max_grad_norm", f"must be > 0 or null, got {norm}")
        frac = self.eval_fraction
        _require(0 <= frac < 1, "eval_fraction", f"must be in [0, 1), got {frac}")
        for key in ("eval_every", "save_every", "keep_checkpoints"):
            value = getattr(self, key)
            _require(value >= 0, key, f"must be >= 0 (0 = off / keep all), got {value}")
        if self.eval_batch_size is not None:
            size = self.eval_batch_size
            _require(size >= 1, "eval_batch_size", f"must be >= 1, got {size}")
        for tracker in self.log_with:
            _choice(tracker, TRACKERS, "log_with")
        _choice(self.on_invalid, ON_INVALID, "on_invalid")
        object.__setattr__(self, "precision", _PRECISION_OF_DTYPE.get(self.precision, self.precision))
        _choice(self.precision, PRECISIONS + tuple(_PRECISION_OF_DTYPE), "precision")
        _require(isinstance(self.compile, bool), "compile", f"must be true or false, got {self.compile!r}")
        _require(isinstance(self.packing, bool), "packing", f"must be true or false, got {self.packing!r}")
        _require(isinstance(self.share_prompt, bool), "share_prompt", f"must be true or false, got {self.share_prompt!r}")


@dataclass(frozen=True)
class Config:
    """A whole training run: ``model``, ``reference``, ``data`` sources and ``train``.

    Attributes:
        model: the policy to train.
        data: the data sources, each with its loss and weight.
        train: optimisation, evaluation, checkpointing and logging.
        reference: where reference log-probs come from.
    """

    model: ModelConfig
    data: tuple[DataSourceConfig, ...]
    train: TrainConfig
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)

    def __post_init__(self) -> None:
        _require(len(self.data) >= 1, "data", "needs at least one data source")
        names = self.source_names
        for i, name in enumerate(names):
            unique = names.index(name) == i
            _require(unique, f"data.{i}.name", f"duplicate source name {name!r}; name each source")
        if self.reference.strategy == "adapter":
            detail = "'adapter' needs model.lora (the reference is the policy, adapter disabled)"
            if any((d.steer or {}).get("adapter_rank") for d in self.data):
                detail += "; with steer.adapter_rank use 'copy' (the base stays frozen, so the copy is the base)"
            _require(self.model.lora is not None, "reference.strategy", detail)

    @property
    def source_names(self) -> list[str]:
        """Source names: ``name`` if given, else ``<loss>`` (``<loss>_<index>`` when a loss
        is used by several unnamed sources)."""
        counts: dict[str, int] = {}
        for source in self.data:
            counts[source.loss] = counts.get(source.loss, 0) + 1
        names = []
        for i, source in enumerate(self.data):
            if source.name is not None:
                names.append(source.name)
            else:
                names.append(source.loss if counts[source.loss] == 1 else f"{source.loss}_{i}")
        return names
