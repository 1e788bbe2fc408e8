"""The table ``feedalign train`` prints at the end: steps, time, final metrics per source,
where the model and the last checkpoint are."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# Per-source metric suffixes shown when present, in this order (train metrics are
# "<source>/<suffix>", evaluation metrics "eval/<source>/<suffix>").
SOURCE_COLUMNS = ("rewards/accuracy", "rewards/accuracies", "rewards/margins")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def source_rows(sources: Sequence[str], metrics: Mapping[str, float],
                eval_metrics: Mapping[str, float]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per source with its last train and eval metrics."""
    columns = [c for c in SOURCE_COLUMNS if any(f"{s}/{c}" in metrics for s in sources)]
    eval_columns = [c for c in SOURCE_COLUMNS if any(f"eval/{s}/{c}" in eval_metrics for s in sources)]
    header = ["source", "loss", *columns, *(["eval loss"] if eval_metrics else []), *(f"eval {c}" for c in eval_columns)]
    rows = []
    for name in sources:
        row = [name, _fmt(metrics.get(f"loss/{name}"))]
        row += [_fmt(metrics.get(f"{name}/{c}")) for c in columns]
        if eval_metrics:
            row.append(_fmt(eval_metrics.get(f"eval/loss/{name}")))
        row += [_fmt(eval_metrics.get(f"eval/{name}/{c}")) for c in eval_columns]
        rows.append(row)
    return header, rows


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def format_summary(result: Any, sources: Sequence[str]) -> str:
    """The end-of-run summary of a ``TrainResult``."""
    resumed = f" (resumed at step {result.start_step})" if result.resumed_from is not None else ""
    trained = result.steps - result.start_step
    rate = f", {result.loop_seconds / trained:.3g} s/step" if trained > 0 else ""
    lines = [f"trained {result.steps} steps{resumed} in {result.seconds:.1f} s (loading included{rate})"]
    header, rows = source_rows(sources, result.metrics, result.eval_metrics)
    lines.append(table(header, rows))
    if "loss" in result.metrics:
        lines.append(f"total loss (weighted) {_fmt(result.metrics['loss'])}")
    lines.append(f"final model: {result.final_dir}")
    if result.checkpoint is not None:
        lines.append(f"last checkpoint: {result.checkpoint}")
    return "\n".join(lines)
