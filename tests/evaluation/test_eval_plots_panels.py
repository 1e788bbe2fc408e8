"""Error bars, side-by-side training panels, a front legend that names the weight, 0644 files."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from feedalign.evaluation import plots
from feedalign.evaluation.report import write_json, write_text_atomic


def _png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bars_with_error_bars_differ_from_bars_without(tmp_path):
    data = {"dpo": {"helpful": (0.1, 0.4), "concise": (0.5, 0.45)}}
    plain = plots.plot_bars(tmp_path / "plain.png", data)
    with_se = plots.plot_bars(tmp_path / "se.png", data, errors={"dpo": {"helpful": 0.05, "concise": 0.02}})
    _png(with_se)
    assert plain.read_bytes() != with_se.read_bytes()


def test_panels_draw_one_axis_per_non_empty_panel(tmp_path, monkeypatch):
    made = []
    real = plots._new_figure

    def spy(size):
        fig = real(size)
        made.append(fig)
        return fig

    monkeypatch.setattr(plots, "_new_figure", spy)
    steps = range(10)
    panels = {"loss": {"loss": [(s, 1 / (1 + s)) for s in steps]},
              "reward margins": {"dpo/rewards/margins": [(s, 0.1 * s) for s in steps]},
              "reward accuracies": {}}
    _png(plots.plot_panels(tmp_path / "t.png", panels, title="run"))
    assert [ax.get_title() for ax in made[0].axes] == ["loss", "reward margins"]
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_panels(tmp_path / "e.png", {"loss": {}})


def test_front_legend_names_the_weight(tmp_path, monkeypatch):
    made = []
    real = plots._new_figure
    monkeypatch.setattr(plots, "_new_figure", lambda size: made.append(real(size)) or made[-1])
    w1 = np.linspace(0, 1, 3)
    plots.plot_front(tmp_path / "f.png", {"steer": (np.column_stack([w1, 1 - w1]), w1)},
                     objectives=("helpful", "concise"))
    legend = made[0].axes[0].get_legend().get_title().get_text()
    assert legend == "labels: w1 = weight on helpful; w2 = 1 - w1 on concise"


def test_report_files_are_written_0644(tmp_path):
    old = os.umask(0o022)
    try:
        for path in (write_json(tmp_path / "r.json", {"a": 1}), write_text_atomic(tmp_path / "r.md", "# r\n")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(old)
