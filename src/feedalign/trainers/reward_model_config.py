"""Configuration of ``feedalign rm train``: frozen dataclasses read from YAML."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedalign.config.errors import ConfigError

NORMALIZATIONS = ("train", "reference", "none")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class RMModelConfig:
    """``path`` (a causal LM / base model dir or hub id) or ``builder`` (``text_task`` for the
    synthetic task's tiny Llama, or ``module:function`` returning ``(model, tokenizer)``)."""

    path: str | None = None
    builder: str | None = None
    builder_options: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.path is None) == (self.builder is None):
            raise ConfigError("give exactly one of `path` or `builder`", key="path")


@dataclass(frozen=True)
class RMSourceConfig:
    """One data source: ``path`` (None when records are passed in memory under ``name``);
    ``format``, ``columns``, ``label_values``, ``split``, ``scores``, ``ties`` as for
    ``feedalign train`` sources (docs/data.md)."""

    path: str | tuple[str, ...] | None = None
    objective: str | None = None
    name: str | None = None
    weight: float = 1.0
    hparams: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    columns: dict[str, str] | None = None
    label_values: dict[str, Any] | None = None
    split: str | None = None
    scores: Any = None
    ties: str = "drop"

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"must be >= 0, got {self.weight}", key="weight")
        from feedalign.data.options import source_option_errors

        for key, detail in source_option_errors(self):
            raise ConfigError(detail, key=key)


@dataclass(frozen=True)
class RMTrainConfig:
    output_dir: str
    lr: float = 1e-3
    steps: int = 300
    batch_size: int = 16
    eval_fraction: float = 0.2
    eval_batch_size: int = 64
    seed: int = 0
    max_length: int = 512
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    log_every: int = 50
    save_every: int = 0  # checkpoint every N steps and at the end (0: none); see trainers.rm_resume
    keep_checkpoints: int = 2
    normalization: str = "train"
    reference_samples: str | None = None
    normalization_samples: int = 4096
    device: str = "auto"

    def __post_init__(self) -> None:
        checks = [
            (self.lr > 0, "lr", f"must be > 0, got {self.lr}"),
            (self.steps >= 1, "steps", f"must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}"),
            (0 <= self.eval_fraction < 1, "eval_fraction", f"must be in [0, 1), got {self.eval_fraction}"),
            (self.normalization in NORMALIZATIONS, "normalization", f"must be one of {list(NORMALIZATIONS)}"),
            (self.device in DEVICES, "device", f"must be one of {list(DEVICES)}"),
            (self.normalization != "reference" or self.reference_samples is not None, "reference_samples",
             "is required when normalization is 'reference'"),
        ]
        for ok, key, detail in checks:
            if not ok:
                raise ConfigError(detail, key=key)


@dataclass(frozen=True)
class RewardModelConfig:
    model: RMModelConfig
    data: tuple[RMSourceConfig, ...]
    train: RMTrainConfig
    objectives: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("needs at least one data source", key="data")
        names = self.source_names
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate source names {names}; name each source", key="data")

    @property
    def source_names(self) -> list[str]:
        return [s.name or f"data_{i}" for i, s in enumerate(self.data)]


def load_rm_config(path: str | Path, overrides: Sequence[str] = ()) -> RewardModelConfig:
    """Read ``feedalign rm train`` YAML with ``key.sub=value`` overrides."""
    from feedalign.config.vocabulary import normalize_rm_config

    return load_dataclass_yaml(RewardModelConfig, path, overrides, normalize=normalize_rm_config)


def load_dataclass_yaml(cls: type, path: str | Path, overrides: Sequence[str] = (),
                        normalize: Any = None) -> Any:
    """YAML file -> frozen dataclass ``cls`` with the config loader's key/type checks
    (``normalize(raw)``, if given, runs on the raw mapping after the overrides)."""
    import yaml

    from feedalign.config.loader import apply_override, build

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    if normalize is not None:
        normalize(raw)
    try:
        return build(cls, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", key=exc.key) from None
