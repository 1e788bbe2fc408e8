"""Checks that look at the world, run before any training starts.

Each failure is a :class:`ConfigError` naming the config key and what was expected, so a run
never dies an hour in because of a typo in a path or a loss name.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedalign.config.errors import ConfigError
from feedalign.config.schema import Config, DataSourceConfig

# "org/name" or "name" (letters, digits, - _ .); local paths are anything else.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_POLICY_KINDS = ("pair", "unpaired", "sequence")


@dataclass(frozen=True)
class CheckedSource:
    """A data source with its loss spec and fully resolved hyperparameters."""

    name: str
    config: DataSourceConfig
    spec: Any  # feedalign.losses.LossSpec
    hparams: dict[str, Any]
    steer: Any = None  # feedalign.multiobjective.steering.SteeringSpec of a ``steer:`` source


def check_config(
    config: Config,
    *,
    resume: bool = False,
    model_given: bool = False,
    tokenizer_given: bool = False,
    in_memory: Collection[str] = (),
) -> list[CheckedSource]:
    """Validate ``config`` against the file system and the loss registry.

    Args:
        resume: the run continues from a checkpoint in ``train.output_dir``.
        model_given: a model object is passed to ``train``, so ``model.path`` may be unset.
        tokenizer_given: a tokenizer object is passed to ``train``.
        in_memory: names of sources whose records are passed to ``train`` directly.

    Returns the sources with their loss specs and resolved hyperparameters.
    """
    check_output_dir(config, resume=resume)
    check_trackers(config.train.log_with)
    if not model_given:
        check_model_path(config.model.path, "model.path")
    if not tokenizer_given:
        if config.model.tokenizer is not None:
            check_model_path(config.model.tokenizer, "model.tokenizer")
        elif model_given:
            check_model_path(config.model.path, "model.path")
    checked = []
    for index, (name, source) in enumerate(zip(config.source_names, config.data)):
        prefix = f"data.{index}"
        if name not in in_memory:
            check_data_paths(source, prefix)
        spec, hparams = check_loss(source, prefix)
        check_kl_samples(source, spec, prefix)
        steer = check_steer(source, spec, hparams, config.train.seed, prefix)
        needs_reference = spec.needs_reference or source.kl_samples is not None
        if needs_reference and config.reference.strategy == "none":
            what = f"loss '{spec.name}'" if spec.needs_reference else f"{prefix}.kl_samples"
            raise ConfigError(
                f"{what} needs reference log-probs; set reference.strategy to copy, adapter or cached",
                key="reference.strategy",
            )
        checked.append(CheckedSource(name=name, config=source, spec=spec, hparams=hparams, steer=steer))
    return checked


def check_output_dir(config: Config, *, resume: bool) -> None:
    out = Path(config.train.output_dir).expanduser()
    key = "train.output_dir"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_probe_{os.getpid()}"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot create or write '{out}': {exc.strerror or exc}", key=key) from None
    has_checkpoints = any(p.is_dir() and p.name.startswith("step-") for p in out.iterdir())
    if has_checkpoints and not resume and not config.train.overwrite_output_dir:
        raise ConfigError(
            f"'{out}' already holds checkpoints of an earlier run; pass --resume to continue "
            "it, set train.overwrite_output_dir=true to start over, or pick another directory",
            key=key,
        )


_TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


def check_trackers(trackers: Collection[str]) -> None:
    for name in trackers:
        packages = _TRACKER_PACKAGES.get(name, (name,))
        if not any(importlib.util.find_spec(p) is not None for p in packages):
            raise ConfigError(
                f"'{name}' is requested but not installed (pip install {packages[0]})", key="train.log_with"
            )


def check_model_path(path: str | None, key: str) -> None:
    if path is None:
        raise ConfigError("is required (a local model directory or a hub id)", key=key)
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir() and local.suffix != ".gguf":
            raise ConfigError(f"'{path}' is a file; expected a model directory or a .gguf file", key=key)
        return
    if looks_local(path):
        raise ConfigError(f"'{path}' does not exist (a local path: it is not an 'org/name' hub id)", key=key)


def looks_local(path: str) -> bool:
    """A model path that cannot be a hub id: it starts with '.', '/' or '~', its parent
    directory exists here, it ends in .gguf, or it has no 'org/name' shape."""
    parent = Path(path).expanduser().parent
    return (
        path.startswith((".", "/", "~")) or "\\" in path or path.endswith(".gguf")
        or path.count("/") != 1 or not _HUB_ID.match(path) or (str(parent) not in ("", ".") and parent.is_dir())
    )


def check_data_paths(source: DataSourceConfig, prefix: str) -> None:
    from feedalign.data.db_source import is_database_url

    if not source.paths:
        raise ConfigError(
            "is required (a data file or dataset directory) unless the records are passed "
            "to train(records={name: ...})",
            key=f"{prefix}.path",
        )
    for i, path in enumerate(source.paths):
        key = f"{prefix}.path" if isinstance(source.path, str) else f"{prefix}.path.{i}"
        if is_database_url(path):  # checked when read (feedalign.data.db_source)
            continue
        if not Path(path).expanduser().exists():
            raise ConfigError(f"file not found: '{path}'", key=key)


def takes_kl(spec: Any) -> bool:
    """Whether the loss takes an optional ``kl`` input (a KL(pi_ref || pi_theta) estimate)."""
    return spec.takes("kl")


def check_kl_samples(source: DataSourceConfig, spec: Any, prefix: str) -> None:
    """``kl_samples`` only for losses with a ``kl`` input, and its files must exist."""
    if source.kl_samples is None:
        return
    key = f"{prefix}.kl_samples"
    if not takes_kl(spec):
        raise ConfigError(
            f"loss '{spec.name}' takes no 'kl' input, so reference samples for a KL estimate "
            "have no use here; remove kl_samples (and kl_batch_size)",
            key=key,
        )
    for i, path in enumerate(source.kl_sample_paths):
        if not Path(path).expanduser().exists():
            where = key if isinstance(source.kl_samples, str) else f"{key}.{i}"
            raise ConfigError(f"file not found: '{path}'", key=where)


STEER_INPUTS = ("weight", "margin_weights")


def check_steer(source: DataSourceConfig, spec: Any, hparams: dict[str, Any], seed: int, prefix: str) -> Any:
    """The SteeringSpec of a ``steer:`` source (None without one). ``mode: modpo`` (default)
    needs a pair loss whose signature takes the per-example ``weight`` and ``margin_weights``;
    ``mode: scalarize`` takes any loss."""
    if source.steer is None:
        return None
    key = f"{prefix}.steer"
    modpo_mode = source.steer.get("mode", "modpo") == "modpo"
    if modpo_mode and (spec.feedback != "pair" or not all(name in spec.fn_hparams for name in STEER_INPUTS)):
        raise ConfigError(
            f"loss '{spec.name}' takes no per-example {' / '.join(STEER_INPUTS)} inputs, so a "
            "MODPO-style steered run cannot use it; use a loss such as modpo, set steer.mode: scalarize "
            "(one source per objective), or remove steer",
            key=key,
        )
    from feedalign.multiobjective.steering import spec_for_source

    try:
        return spec_for_source({"seed": seed, **source.steer}, trained=source.objective,
                               beta=float(hparams.get("beta", 0.1)))
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), key=key) from None


def check_loss(source: DataSourceConfig, prefix: str) -> tuple[Any, dict[str, Any]]:
    from feedalign.losses import get_loss

    key = f"{prefix}.loss"
    try:
        spec = get_loss(source.loss)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), key=key) from None
    if spec.feedback not in _POLICY_KINDS:
        raise ConfigError(
            f"'{spec.name}' is a reward-model loss (feedback '{spec.feedback}'); the policy "
            "trainer takes pair, unpaired or sequence losses. Train reward models with "
            "`feedalign rm train`.",
            key=key,
        )
    if source.pairing == "discordant" and spec.feedback != "pair":
        raise ConfigError(
            f"pairing 'discordant' makes pairs, but loss '{spec.name}' takes "
            f"'{spec.feedback}' feedback",
            key=f"{prefix}.pairing",
        )
    if source.margins is not None and "margins" not in spec.state:
        raise ConfigError(
            f"loss '{spec.name}' uses no margin rewards, so `margins` would be ignored; remove it "
            "(margins feed losses with margin state, such as modpo)",
            key=f"{prefix}.margins",
        )
    return spec, check_hparams(spec, source.hparams, f"{prefix}.hparams")


def check_hparams(spec: Any, hparams: Any, key: str) -> dict[str, Any]:
    """The loss's resolved hyperparameters; an unknown name or an invalid value (wrong type,
    out of range, not finite) is a ConfigError on ``<key>.<name>`` naming the value and the
    valid range."""
    from feedalign.losses import HParamError

    if hparams is not None and not isinstance(hparams, dict):
        raise ConfigError(f"must be a mapping of hyperparameter names to values, got {hparams!r}", key=key)
    try:
        return spec.resolve_hparams(hparams)
    except HParamError as exc:
        raise ConfigError(f"{exc.value!r} is invalid for loss '{spec.name}': expected {exc.expected}",
                          key=f"{key}.{exc.name}") from None
