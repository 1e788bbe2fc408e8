"""Figures for fronts with three or more objectives: pairwise projections, parallel coordinates.

``plot_front_pairs`` draws every pair of objectives as a 2-D scatter (one panel per pair,
learned points of each method plus the exact front's projection in grey);
``plot_front_parallel`` draws each point as a polyline across one vertical axis per objective,
coloured by its weight on the first objective. Both use the Agg canvas of
:mod:`feedalign.evaluation.plots` (no pyplot state).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from feedalign.evaluation.plots import _new_figure, _save

__all__ = ["plot_front_pairs", "plot_front_parallel"]


def _points(label: str, points: Any, m: int) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != m:
        raise ValueError(f"'{label}': expected points [N, {m}], got shape {pts.shape}")
    return pts


def plot_front_pairs(
    path: str | os.PathLike,
    learned: Mapping[str, Any],
    objectives: Sequence[str],
    exact: Any = None,
    title: str | None = None,
) -> Path:
    """One scatter panel per pair of objectives (``m (m - 1) / 2`` panels).

    Args:
        path: PNG file to write.
        learned: ``label -> points [N, m]``.
        objectives: the ``m >= 2`` objective names (column order).
        exact: optional ``[M, m]`` exact front, projected in grey.
        title: figure title.
    """
    m = len(objectives)
    if m < 2:
        raise ValueError(f"plot_front_pairs: needs >= 2 objectives, got {list(objectives)}")
    pairs = list(itertools.combinations(range(m), 2))
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    fig = _new_figure((4.0 * cols, 3.6 * rows))
    ex = None if exact is None else _points("exact", exact, m)
    for n, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(rows, cols, n + 1)
        if ex is not None:
            ax.scatter(ex[:, i], ex[:, j], s=4, c="0.75", label="exact front")
        for label, points in learned.items():
            pts = _points(label, points, m)
            ax.scatter(pts[:, i], pts[:, j], s=14, alpha=0.85, label=label)
        ax.set_xlabel(objectives[i])
        ax.set_ylabel(objectives[j])
        ax.grid(alpha=0.3)
        if n == 0:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_front_parallel(
    path: str | os.PathLike,
    points: Any,
    weights: Any,
    objectives: Sequence[str],
    lower: Any = None,
    upper: Any = None,
    title: str | None = None,
) -> Path:
    """Parallel coordinates: one polyline per point across one axis per objective.

    Args:
        path: PNG file to write.
        points: ``[N, m]`` objective vectors (one per weight).
        weights: ``[N, m]`` their weight vectors; the line colour is ``w_1``.
        objectives: names of the ``m`` axes.
        lower, upper: fixed axis bounds (scalars or ``[m]``; default: the points' range).
        title: figure title.
    """
    m = len(objectives)
    pts = _points("points", points, m)
    w = _points("weights", weights, m)
    if w.shape[0] != pts.shape[0]:
        raise ValueError(f"plot_front_parallel: {pts.shape[0]} points but {w.shape[0]} weights")
    lo = np.broadcast_to(np.asarray(pts.min(0) if lower is None else lower, dtype=np.float64), (m,))
    hi = np.broadcast_to(np.asarray(pts.max(0) if upper is None else upper, dtype=np.float64), (m,))
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (pts - lo) / span
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    fig = _new_figure((1.6 * m + 2.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(m)
    for row, wk in zip(scaled, w):
        ax.plot(x, row, "-o", ms=3, lw=1, alpha=0.8, color=cmap(float(wk[0])))
    ax.set_xticks(x, [f"{o}\n[{a:.2g}, {b:.2g}]" for o, a, b in zip(objectives, lo, hi)])
    ax.set_ylabel("objective, scaled to the axis bounds")
    ax.set_xlim(-0.2, m - 0.8)
    ax.grid(alpha=0.3, axis="y")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=ax, label=f"weight on {objectives[0]}")
    if title:
        ax.set_title(title)
    return _save(fig, path)
