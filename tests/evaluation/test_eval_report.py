"""JSON and Markdown report writing."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from feedalign.evaluation.report import markdown_table, to_jsonable, write_json, write_markdown_report


@dataclasses.dataclass(frozen=True)
class _Cfg:
    beta: float
    name: str


def test_write_json_converts_and_is_atomic(tmp_path):
    obj = {
        "hv": np.float64(0.5),
        "n": np.int64(3),
        "front": np.array([[0.5, 1.0], [1.0, 0.0]]),
        "t": torch.tensor([1.5, 2.5]),
        "cfg": _Cfg(0.1, "dpo"),
        "path": Path("a/b.png"),
        "pair": (1, 2),
        "missing": float("nan"),
        "inf": np.inf,
        3: "int key",
    }
    path = write_json(tmp_path / "deep" / "out.json", obj)
    assert path == tmp_path / "deep" / "out.json"
    loaded = json.loads(path.read_text())
    assert loaded == {
        "hv": 0.5,
        "n": 3,
        "front": [[0.5, 1.0], [1.0, 0.0]],
        "t": [1.5, 2.5],
        "cfg": {"beta": 0.1, "name": "dpo"},
        "path": "a/b.png",
        "pair": [1, 2],
        "missing": None,
        "inf": None,
        "3": "int key",
    }
    # Overwrite in place; no temporary files are left behind.
    write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert os.listdir(path.parent) == ["out.json"]


def test_write_json_failure_keeps_old_file(tmp_path):
    path = write_json(tmp_path / "r.json", {"ok": True})
    with pytest.raises(TypeError, match=r"cannot write <object object at .*> \(type object\) as JSON"):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["r.json"]


def test_to_jsonable_sets_sorted():
    assert to_jsonable({"s": {3, 1, 2}}) == {"s": [1, 2, 3]}


def test_markdown_table():
    rows = [{"method": "dpo", "hv": 0.123456, "n": 3}, {"method": "a|b", "hv": None, "extra": "x"}]
    table = markdown_table(rows)
    assert table == (
        "| method | hv | n | extra |\n"
        "|---|---|---|---|\n"
        "| dpo | 0.1235 | 3 |  |\n"
        "| a\\|b |  |  | x |\n"
    )
    assert markdown_table(rows, ["n", "method"], float_format="{:.2f}").splitlines()[2] == "| 3 | dpo |"
    assert markdown_table([{"x": np.float32(0.5)}]).splitlines()[2] == "| 0.5 |"
    with pytest.raises(ValueError, match="no columns"):
        markdown_table([])


def test_write_markdown_report(tmp_path):
    img = tmp_path / "figs" / "front.png"
    img.parent.mkdir()
    img.write_bytes(b"\x89PNG\r\n\x1a\n")
    path = write_markdown_report(
        tmp_path / "report.md",
        "Sweep",
        [("Summary", "All methods ran."), ("Metrics", [{"method": "dpo", "hv": 0.5}])],
        images=[img],
    )
    text = path.read_text()
    assert text.startswith("# Sweep\n")
    assert "## Summary\n\nAll methods ran.\n" in text
    assert "## Metrics\n\n| method | hv |\n|---|---|\n| dpo | 0.5 |\n" in text
    assert "![front](figs/front.png)" in text
