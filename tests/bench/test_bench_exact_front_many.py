"""`feedalign bench exact --objectives 3`: fronts against a dense exact front, TV per row."""

from __future__ import annotations

import dataclasses
import json

import pytest

from feedalign.bench import exact_front_many as many
from feedalign.bench.exact import BenchContext, ExactBenchConfig
from feedalign.cli.main import main


def test_config_for_objectives():
    base = ExactBenchConfig.quick(seed=3)
    cfg = many.config_for_objectives(base, 3, beta=0.5)
    assert cfg.n_objectives == 3 and cfg.weight == (0.5, 0.25, 0.25) and cfg.beta == 0.5 and cfg.seed == 3
    assert many.config_for_objectives(base, 2) == base
    with pytest.raises(ValueError, match="--objectives"):
        many.config_for_objectives(base, 1)
    with pytest.raises(ValueError, match="--beta"):
        many.config_for_objectives(base, 3, beta=0.0)


def test_three_objective_rows_on_a_small_problem(monkeypatch):
    monkeypatch.setitem(many.SWEEP_PER_AXIS, "quick", 6)
    monkeypatch.setitem(many.DENSE_PER_AXIS, "quick", 41)
    cfg = dataclasses.replace(many.config_for_objectives(ExactBenchConfig.quick(), 3), n_front_pairs=50_000,
                              n_steerable=60_000)
    rows = many.rows_front_many(BenchContext(cfg), preset="quick")
    by = {r["method"]: r for r in rows}
    mixture = by["geometric mixture of exact optima"]
    # The exact optima at the sweep's weights reach exactly the grid ceiling, which a coarse
    # 21-weight sweep leaves well below 1 (the under-count a dense front exposes).
    assert mixture["hv_ratio"] == pytest.approx(mixture["grid_ceiling"], abs=1e-9)
    assert mixture["tv_to_target"] == pytest.approx(0.0, abs=1e-9)
    assert mixture["grid_ceiling"] < 0.95
    assert all("bound" not in r for r in rows)  # no bound the sweep cannot reach
    for method in ("modpo sweep", "steerable one-run dpo", "rewarded soups (dpo per objective)"):
        row = by[method]
        assert row["target"] == "dense exact front (861 weights)"
        assert row["tv_to_target"] < 0.02 and row["max_tv_to_target"] < 0.05
        assert abs(row["hv_ratio_grid"] - 1) < 0.02
        assert row["hv_ratio"] == pytest.approx(row["hv_ratio_grid"] * row["grid_ceiling"])


def test_cli_rejects_bad_objectives(capsys):
    assert main(["bench", "exact", "--quick", "--objectives", "1"]) == 2
    assert "--objectives must be >= 2" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_three_objectives_quick(tmp_path):
    path = tmp_path / "rows.json"
    assert main(["bench", "exact", "--quick", "--objectives", "3", "--beta", "1.0", "--groups", "front",
                 "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert {r["objectives"] for r in rows} == {3} and all("tv_to_target" in r for r in rows)
    steer = next(r for r in rows if r["method"] == "steerable one-run dpo")
    assert steer["hv_ratio"] <= steer["grid_ceiling"] + 0.01 and steer["hv_ratio_grid"] > 0.98
