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

__all__ = ["plot_front", "plot_bars", "plot_curves"]


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
) -> Path:
    """Scatter the objective vectors each method reached, labelled by their weight.

    Args:
        path: PNG file to write.
        learned: ``label -> (points [N, 2], weights)``; ``weights`` is ``None``, ``[N]``
            (``w1`` values) or ``[N, m]``; points are joined in the given order.
        exact: optional ``[M, 2]`` exact front, drawn as a line.
        objectives: axis names.
        title: figure title.

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
    annotated = any(weights is not None for _, weights in learned.values())
    ax.legend(fontsize=8, title="labels: weight w1" if annotated else None, title_fontsize=8)
    return _save(fig, path)


def plot_bars(
    path: str | os.PathLike,
    before_after: Mapping[str, Mapping[str, tuple[float, float]]],
    title: str | None = "improvement over the starting policy",
) -> Path:
    """Grouped bars of ``after - before`` per method (groups) and objective (bars).

    Args:
        path: PNG file to write.
        before_after: ``method -> {objective: (before, after)}``.
        title: figure title.
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
        bars = ax.bar(x + (j - (len(objectives) - 1) / 2) * width, deltas, width, label=obj)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x, methods, rotation=20, ha="right")
    ax.set_ylabel("after - before")
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
