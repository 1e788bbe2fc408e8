"""What ``--resume`` checks before it continues a run, and what it does with changed settings.

* Data: every source's content fingerprint (``data.fingerprint``, over the examples the run
  trains on, in their order) is stored in each checkpoint. A source whose fingerprint
  differs refuses the resume (ConfigError naming the source) unless ``allow_changed_data``.
* Settings: a setting that differs from the checkpoint's either takes effect from the next
  step or refuses the resume. Learning rate, schedule and optimizer hyperparameters are
  written into the restored optimizer and the schedule is re-derived from the new values
  (as if the run had used them from the start); settings read at every step (loss
  hyperparameters, source weights, logging and saving intervals, ...) need nothing. What
  changes the model, the data layout or the sampling order (model, reference, seed, batch
  size, ...) is refused: the run would be neither the old nor a new one.
* Every checkpoint records the config that ran since the last resume and, in
  ``trainer_state.json`` under ``config_history``, each resume's changes (step, old, new).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from feedalign.config.errors import ConfigError
from feedalign.data.fingerprint import fingerprint_records

logger = logging.getLogger("feedalign.train")

# Written into the optimizer / scheduler on resume.
OPTIMIZER_KEYS = ("lr", "weight_decay", "adam_betas", "adam_eps")
SCHEDULE_KEYS = ("lr", "scheduler", "warmup_steps", "warmup_ratio", "max_steps", "epochs")
# Read afresh at every step or only by the code around the loop.
LIVE_TRAIN_KEYS = (
    "max_grad_norm", "eval_every", "eval_batch_size", "save_every", "keep_checkpoints", "log_every",
    "log_with", "run_name", "on_invalid", "overwrite_output_dir", "output_dir", "logps_chunk_size", "compile",
)
# data.<i>.<key>: paths are checked by the fingerprint; hparams and weights are read per step.
_LIVE_DATA = re.compile(r"^data\.\d+\.(path|weight|hparams(\..+)?)$")
_EXAMPLE_FIELDS = ("id", "prompt", "completion", "objective", "label", "rejected", "weight", "tie", "truncated",
                  "rejected_truncated", "steer_weights", "plain_prompt")


def source_fingerprint(examples: Any) -> str:
    """Fingerprint of a source's examples (text, labels, ids, order; not tokens or locations)."""
    return fingerprint_records({f: getattr(e, f) for f in _EXAMPLE_FIELDS} for e in examples)


def check_fingerprints(saved: Mapping[str, str] | None, current: Mapping[str, str], *, allow: bool,
                       path: Any, changed: list[str]) -> None:
    """Refuse (ConfigError) when a source's data differs from the checkpoint's."""
    if saved is None:
        logger.warning("checkpoint %s records no data fingerprints (older format): data changes cannot be detected",
                       path)
        return
    differ = sorted(n for n in current.keys() | saved.keys() if saved.get(n) != current.get(n))
    if not differ:
        return
    what = ", ".join(f"'{n}'" + ("" if n in saved else " (new)") + ("" if n in current else " (gone)") for n in differ)
    detail = f"the data of source {what} differs from what checkpoint {path} was trained on"
    if allow:
        logger.warning("%s; continuing (--allow-changed-data)", detail)
        return
    settings = f"; changed settings: {', '.join(changed)}" if changed else ""
    raise ConfigError(
        f"{detail} (rows edited, added, removed or reordered){settings}; resume needs the same data: "
        "restore it, start a new output_dir, or pass --allow-changed-data to continue anyway",
        key="train.output_dir",
    )


def refused_changes(changed: list[str]) -> list[str]:
    """The changed keys that cannot take effect on a resume."""
    ok = set(OPTIMIZER_KEYS) | set(SCHEDULE_KEYS) | set(LIVE_TRAIN_KEYS)
    out = []
    for key in changed:
        section, _, rest = key.partition(".")
        if section == "train" and rest in ok:
            continue
        if section == "data" and _LIVE_DATA.match(key):
            continue
        out.append(key)
    return out


def check_changes(diff: Mapping[str, tuple[Any, Any]], path: Any, *, step: int, total: int) -> None:
    """Refuse (ConfigError) settings that cannot change, and a run already past its new end."""
    if step > total:
        raise ConfigError(
            f"cannot resume from {path}: it is at step {step}, past the {total} steps this config trains "
            "(train.max_steps / train.epochs)",
            key="train.output_dir",
        )
    refused = refused_changes(sorted(diff))
    if refused:
        shown = ", ".join(f"{k} ({diff[k][0]!r} -> {diff[k][1]!r})" for k in refused[:8])
        raise ConfigError(
            f"cannot resume from {path} with changed {shown}: these settings cannot change in the middle of "
            "a run; restore them or start a new output_dir",
            key="train.output_dir",
        )


def apply_changes(run: Any, diff: Mapping[str, tuple[Any, Any]], saved_total: int | None) -> None:
    """Write the new optimizer hyperparameters and re-derive the schedule (only if they or
    the total step count changed: an unchanged resume is left bit-identical)."""
    if not diff and saved_total == run.total:
        return
    train = run.config.train
    keys = {k.partition(".")[2] for k in diff if k.startswith("train.")}
    total_changed = saved_total is not None and saved_total != run.total
    if not (keys & set(OPTIMIZER_KEYS) or keys & set(SCHEDULE_KEYS) or total_changed):
        _log_changes(diff, run.step, None)
        return
    groups = run.optimizer.param_groups
    for group in groups:
        group.update(weight_decay=train.weight_decay, betas=tuple(train.adam_betas), eps=train.adam_eps,
                     initial_lr=train.lr)
    inner = getattr(run.scheduler, "scheduler", run.scheduler)  # accelerate wraps it
    inner.base_lrs = [train.lr for _ in groups]
    for group, base, factor in zip(groups, inner.base_lrs, inner.lr_lambdas):
        group["lr"] = base * factor(inner.last_epoch)
    inner._last_lr = [group["lr"] for group in groups]
    if total_changed:
        logger.warning("total steps now %d (were %d)", run.total, saved_total)
    _log_changes(diff, run.step, groups[0]["lr"])


def _log_changes(diff: Mapping[str, tuple[Any, Any]], step: int, lr: float | None) -> None:
    if not diff:
        return
    shown = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(diff.items()))
    tail = f"; schedule re-derived from the new values, lr for step {step + 1}: {lr:.6g}" if lr is not None else ""
    logger.warning("resuming with changed settings, in effect from step %d: %s%s", step + 1, shown, tail)


def flat_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a dumped config (lists of mappings are indexed: ``data.0.loss``)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flat_config(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(flat_config(value, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): node}


def config_diff(saved_yaml: str, current_yaml: str) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, current value)}`` for every key that differs."""
    import yaml

    saved, current = flat_config(yaml.safe_load(saved_yaml)), flat_config(yaml.safe_load(current_yaml))
    return {k: (saved.get(k), current.get(k)) for k in sorted(saved.keys() | current.keys())
            if saved.get(k) != current.get(k)}
