"""PNG figures for multi-objective results: fronts, per-method improvements, training curves.

matplotlib is imported inside each function and drawn through the Agg canvas directly
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), so no global pyplot state or
interactive backend is touched and plotting works headless and from worker threads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_front", "plot_bars", "plot_curves", "plot_panels"]


def _new_figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _weight_label(w: Any) -> str:
    arr = np.atleast_1d(np.asarray(w, dtype=np.float64))
    if arr.size <= 2:  # a scalar w1, or a 2-objective weight named by its w1
        return f"{arr[0]:.2g}"
    return "(" + ",".join(f"{v:.2g}" for v in arr) + ")"


def plot_front(
    path: str | os.PathLike,
    learned: Mapping[str, tuple[Any, Any]],
    exact: Any = None,
    objectives: tuple[str, str] = ("objective 1", "objective 2"),
    title: str | None = None,
    weight_names: Sequence[str] | None = None,
) -> Path:
    """Scatter the objective vectors each method reached, labelled by their weight.

    Args:
        path: PNG file to write.
        learned: ``label -> (points [N, 2], weights)``; ``weights`` is ``None``, ``[N]``
            (``w1`` values) or ``[N, m]``; points are joined in the given order.
        exact: optional ``[M, 2]`` exact front, drawn as a line.
        objectives: axis names.
        title: figure title.
        weight_names: the objective each weight component weighs (default: ``objectives``);
            the legend names what an annotation's number is.

    Returns:
        ``path`` as a ``Path``.
    """
    fig = _new_figure((6.4, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    if exact is not None:
        curve = np.asarray(exact, dtype=np.float64).reshape(-1, 2)
        ax.plot(curve[:, 0], curve[:, 1], "k--", lw=1.2, label="exact front")
    for label, (points, weights) in learned.items():
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        (line,) = ax.plot(pts[:, 0], pts[:, 1], "o-", ms=5, lw=1, alpha=0.85, label=label)
        if weights is None:
            continue
        w = np.asarray(weights, dtype=np.float64)
        if w.shape[0] != pts.shape[0]:
            raise ValueError(
                f"plot_front: '{label}' has {pts.shape[0]} points but {w.shape[0]} weights"
            )
        for p, wk in zip(pts, w):
            ax.annotate(_weight_label(wk), p, textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=line.get_color())
    ax.set_xlabel(objectives[0])
    ax.set_ylabel(objectives[1])
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    annotated = [np.asarray(w) for _, w in learned.values() if w is not None]
    ax.legend(fontsize=8, title=_weight_legend(annotated, list(weight_names or objectives)) if annotated else None,
              title_fontsize=8)
    return _save(fig, path)


def _weight_legend(weights: list[np.ndarray], names: list[str]) -> str:
    """What the numbers next to the points are, in words."""
    if all(w.ndim <= 1 or w.shape[-1] <= 2 for w in weights):
        other = f"; w2 = 1 - w1 on {names[1]}" if len(names) > 1 else ""
        return f"labels: w1 = weight on {names[0]}{other}"
    return "labels: weights (" + ", ".join(names) + ")"


def plot_bars(
    path: str | os.PathLike,
    before_after: Mapping[str, Mapping[str, tuple[float, float]]],
    title: str | None = "improvement over the starting policy",
    errors: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Grouped bars of ``after - before`` per method (groups) and objective (bars).

    Args:
        path: PNG file to write.
        before_after: ``method -> {objective: (before, after)}``.
        title: figure title.
        errors: ``method -> {objective: standard error of after - before}``, drawn as
            error bars (+- 1 SE); missing entries get none.
    """
    methods = list(before_after)
    objectives = list(dict.fromkeys(o for m in methods for o in before_after[m]))
    if not methods or not objectives:
        raise ValueError("plot_bars: nothing to plot (no methods or no objectives)")
    fig = _new_figure((max(6.4, 1.2 * len(methods) * max(1, len(objectives)) / 2), 4.8))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(objectives)
    x = np.arange(len(methods))
    for j, obj in enumerate(objectives):
        deltas = [
            (before_after[m][obj][1] - before_after[m][obj][0]) if obj in before_after[m] else np.nan
            for m in methods
        ]
        yerr = None
        if errors is not None:
            yerr = [errors.get(m, {}).get(obj, np.nan) for m in methods]
        bars = ax.bar(x + (j - (len(objectives) - 1) / 2) * width, deltas, width, label=obj, yerr=yerr,
                      capsize=3 if yerr is not None else 0)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x, methods, rotation=20, ha="right")
    ax.set_ylabel("after - before" + (" (bars: +- 1 standard error)" if errors is not None else ""))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_curves(
    path: str | os.PathLike,
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str | None = None,
    xlabel: str = "step",
    ylabel: str = "value",
    logy: bool = False,
) -> Path:
    """Line plot of training curves.

    Args:
        path: PNG file to write.
        series: ``name -> [(step, value), ...]``.
        title, xlabel, ylabel: labels.
        logy: log-scale y axis (for losses).
    """
    fig = _new_figure((6.4, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    for name, pairs in series.items():
        arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
        ax.plot(arr[:, 0], arr[:, 1], lw=1.2, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_panels(
    path: str | os.PathLike,
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    title: str | None = None,
    xlabel: str = "step",
) -> Path:
    """Training curves side by side, one panel per quantity (e.g. loss, reward margins,
    reward accuracies).

    Args:
        path: PNG file to write.
        panels: ``panel title -> {series name -> [(step, value), ...]}``; empty panels are skipped.
        title: figure title.
    """
    shown = {name: series for name, series in panels.items() if any(len(v) for v in series.values())}
    if not shown:
        raise ValueError("plot_panels: nothing to plot (every panel is empty)")
    fig = _new_figure((4.2 * len(shown), 4.0))
    for i, (name, series) in enumerate(shown.items(), start=1):
        ax = fig.add_subplot(1, len(shown), i)
        for label, pairs in series.items():
            arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
            ax.plot(arr[:, 0], arr[:, 1], lw=1.1, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
