"""PNG figures: written, valid PNG, not blank."""

import numpy as np
import pytest

from feedalign.evaluation.plots import plot_bars, plot_curves, plot_front

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes


def _n_colours(path):
    from matplotlib.image import imread

    img = imread(path)
    return len(np.unique(img.reshape(-1, img.shape[-1]), axis=0))


def test_plot_front(tmp_path):
    w1 = np.linspace(0, 1, 6)
    learned = {
        "dpo sweep": (np.column_stack([w1, 1 - w1**2]), w1),
        "soup": (np.column_stack([w1 * 0.9, 0.9 - 0.9 * w1**2]), np.column_stack([w1, 1 - w1])),
        "single": (np.array([[0.5, 0.5]]), None),
    }
    t = np.linspace(0, 1, 50)
    out = plot_front(tmp_path / "sub" / "front.png", learned, exact=np.column_stack([t, 1 - t**2]),
                     objectives=("helpful", "harmless"), title="front")
    assert out == tmp_path / "sub" / "front.png"
    _assert_png(out)
    assert _n_colours(out) > 10  # drawn lines and markers, not a blank canvas
    with pytest.raises(ValueError, match="'bad' has 2 points but 3 weights"):
        plot_front(tmp_path / "bad.png", {"bad": (np.zeros((2, 2)), [0.0, 0.5, 1.0])})


def test_plot_bars(tmp_path):
    data = {
        "dpo": {"helpful": (0.1, 0.4), "harmless": (0.2, 0.15)},
        "kto": {"helpful": (0.1, 0.3), "harmless": (0.2, 0.35)},
        "sft": {"helpful": (0.1, 0.2)},  # missing objective -> no bar
    }
    out = plot_bars(tmp_path / "bars.png", data)
    _assert_png(out)
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_bars(tmp_path / "empty.png", {})


def test_plot_curves(tmp_path):
    steps = range(0, 100, 5)
    series = {"loss": [(s, 1.0 / (1 + s)) for s in steps], "kl": [(s, 0.01 * s + 1e-3) for s in steps]}
    out = plot_curves(tmp_path / "curves.png", series, title="training", logy=True)
    _assert_png(out)
    assert str(plot_curves(str(tmp_path / "c2.png"), series)).endswith("c2.png")
