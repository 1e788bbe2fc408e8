"""Metrics: a JSONL file in the output directory, console lines, and optional trackers.

``metrics.jsonl`` holds one JSON object per logged step (``{"step": 10, "loss": ...}``) and
per evaluation (keys prefixed ``eval/``). TensorBoard / W&B / MLflow are used only when
``train.log_with`` names them, through accelerate's trackers (imported lazily by accelerate).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("feedalign.train")

METRICS_FILE = "metrics.jsonl"


def to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


def to_floats(values: Mapping[str, Any]) -> dict[str, float]:
    """:func:`to_float` of every value, reading all tensors back to the host in ONE transfer
    (one device sync instead of one per key). Same values as ``to_float`` key by key."""
    return _host({k: _as_double(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()})


def _host(values: Mapping[str, Any]) -> dict[str, float]:
    """Floats and 0-d float64 tensors -> floats, tensors in one transfer, unchanged."""
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    read = dict(zip(tensors, _read(list(tensors.values()))))
    return {k: read[k] if k in read else float(v) for k, v in values.items()}


def _as_double(value: torch.Tensor) -> torch.Tensor:
    # The fp32 mean, then widened exactly: float() of it is what to_float returns.
    mean = value.detach().float().mean()
    return (mean.cpu() if mean.device.type == "mps" else mean).double()  # MPS has no float64


def _read(tensors: list[torch.Tensor]) -> list[float]:
    if not tensors:
        return []
    device = tensors[0].device
    return torch.stack([t.to(device) for t in tensors]).cpu().tolist()


def _json_value(value: float) -> float | None:
    return value if math.isfinite(value) else None


class MetricsAverager:
    """Averages metrics over the micro-steps of one optimizer step, ignoring NaNs (a metric
    such as the mean reward of the desirable class is NaN on a batch without one). Holds
    ``(sum, count)`` per key, so that averages merge exactly across processes.

    Tensor metrics stay on their device: sums and counts accumulate there in float64 (the
    same additions, in the same order, as on the host, so the values are bitwise those of
    summing Python floats) and are read back together, once, by :meth:`sums` /
    :meth:`result`, instead of one device sync per metric per micro-step. Devices without
    float64 (MPS) are read at once.
    """

    def __init__(self) -> None:
        self._sums: dict[str, Any] = {}  # float, or a 0-d float64 tensor
        self._counts: dict[str, Any] = {}

    def add(self, metrics: Mapping[str, Any]) -> None:
        """One value per key (counted once)."""
        for key, value in metrics.items():
            if not isinstance(value, torch.Tensor) or value.device.type == "mps":
                self.add_sums({key: (to_float(value), 1.0)})
                continue
            value = _as_double(value)
            finite_or_inf = ~torch.isnan(value)
            self._sums[key] = self._sums.get(key, 0.0) + torch.where(finite_or_inf, value, 0.0)
            self._counts[key] = self._counts.get(key, 0.0) + finite_or_inf.double()

    def add_sums(self, sums: Mapping[str, tuple[Any, float]]) -> None:
        """``{key: (sum, count)}``, e.g. a per-objective accuracy over ``count`` examples.
        A sum may be a 0-d tensor (kept on its device; it must not be NaN)."""
        for key, (value, count) in sums.items():
            self._sums.setdefault(key, 0.0)
            self._counts.setdefault(key, 0.0)
            if isinstance(value, torch.Tensor):
                if value.device.type == "mps":
                    value = float(value)
                else:
                    value = value.double()
            if not isinstance(value, torch.Tensor) and math.isnan(value):
                continue
            self._sums[key] += value
            self._counts[key] += count

    def sums(self) -> dict[str, tuple[float, float]]:
        both = _host({**{("s", k): v for k, v in self._sums.items()}, **{("c", k): v for k, v in self._counts.items()}})
        sums = {k: both[("s", k)] for k in self._sums}
        counts = {k: both[("c", k)] for k in self._counts}
        return {k: (sums[k], counts[k]) for k in self._sums}

    def result(self) -> dict[str, float]:
        return {k: (s / c if c else math.nan) for k, (s, c) in self.sums().items()}


class MetricsLogger:
    """Writes metrics.jsonl (main process only) and forwards to accelerate trackers."""

    def __init__(self, output_dir: str | os.PathLike[str], accelerator: Any, *, resume_step: int | None,
                 trackers: tuple[str, ...] = (), run_config: Mapping[str, Any] | None = None) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self.accelerator = accelerator
        self.trackers = trackers
        self.is_main = accelerator.is_main_process
        if self.is_main:
            if resume_step is None:
                self.path.write_text("", encoding="utf-8")
            else:
                self._truncate_after(resume_step)
        if trackers:
            accelerator.init_trackers("feedalign", config=_flat(run_config or {}))

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint (they will be logged again)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        self.path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = to_floats(metrics)
        if self.is_main:
            record = {"step": step, **{k: _json_value(v) for k, v in values.items()}}
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.trackers:
            self.accelerator.log({k: v for k, v in values.items() if math.isfinite(v)}, step=step)

    def close(self) -> None:
        if self.trackers:
            self.accelerator.end_training()


def format_metrics(metrics: Mapping[str, float], keys: tuple[str, ...] | None = None) -> str:
    """A short console line: ``loss=0.6931 loss/dpo=0.6931 lr=1e-05``."""
    items = [(k, v) for k, v in metrics.items() if keys is None or k in keys]
    return " ".join(f"{k}={v:.4g}" for k, v in items)


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(v, Mapping) for v in value):
                for i, v in enumerate(value):
                    out.update(_flat(v, f"{name}.{i}."))
            else:
                out[name] = str(list(value))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value if value is not None else "null"
        else:
            out[name] = str(value)
    return out


def read_metrics(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of an output directory's metrics.jsonl (null -> NaN)."""
    path = Path(output_dir) / METRICS_FILE
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        out.append({k: (math.nan if v is None else v) for k, v in record.items()})
    return out
