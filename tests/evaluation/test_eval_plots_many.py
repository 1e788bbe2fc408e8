"""Plots for 3+ objectives: pairwise projections and parallel coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from feedalign.evaluation.plots_many import plot_front_pairs, plot_front_parallel
from feedalign.multiobjective.weights import simplex_grid


def test_pairs_and_parallel_write_pngs(tmp_path):
    w = simplex_grid(4, 4)
    pts = 0.2 + 0.6 * w
    out = plot_front_pairs(tmp_path / "pairs.png", {"steerable": pts, "soups": pts * 0.9}, ["a", "b", "c", "d"],
                           exact=simplex_grid(4, 7), title="t")
    assert out.stat().st_size > 5000
    par = plot_front_parallel(tmp_path / "par.png", pts, w, ["a", "b", "c", "d"], lower=0, upper=1)
    assert par.stat().st_size > 5000


def test_shapes_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"'m1': expected points \[N, 3\]"):
        plot_front_pairs(tmp_path / "x.png", {"m1": np.zeros((4, 2))}, ["a", "b", "c"])
    with pytest.raises(ValueError, match="3 points but 2 weights"):
        plot_front_parallel(tmp_path / "x.png", np.zeros((3, 3)), simplex_grid(3, 2)[:2], ["a", "b", "c"])
