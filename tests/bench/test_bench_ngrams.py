"""`feedalign bench ngrams --quick`: the pipeline runs end to end and reports against the exact front."""

from __future__ import annotations

import json

import numpy as np
import pytest

from feedalign.bench.ngrams import margin_function, prior_sequences
from feedalign.cli.main import main
from feedalign.envs.ngrams import ngram_task


def test_prior_and_margins():
    task = ngram_task(3)
    seqs = prior_sequences(task, 200, 0.8, seed=0)
    assert all(task.invalid_reason(s) is None for s in seqs)
    share = np.mean([c in "AVC" for s in seqs for c in s])
    assert 0.78 < share < 0.9  # 0.8 focused + 0.2 * 3/20 by chance
    margins = margin_function(3, k=0, scale=2.0)([">", ">"], ["AVCAVC" * 6, "Q" * 32])
    assert margins.shape == (2, 2)
    np.testing.assert_allclose(margins.numpy(), [[24 / 18, 22 / 18], [0, 0]], rtol=1e-6)


def test_cli_rejects_bad_variant(capsys):
    assert main(["bench", "ngrams", "--objectives", "5"]) == 2
    assert "2, 3 or 4" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_reports_hv_against_the_exact_front(tmp_path):
    path = tmp_path / "ngrams.json"
    assert main(["bench", "ngrams", "--quick", "--objectives", "2", "--json", str(path),
                 "--output-dir", str(tmp_path / "models")]) == 0
    report = json.loads(path.read_text())
    task = ngram_task(2)
    assert report["task"]["exact_hypervolume"] == pytest.approx(task.exact_hypervolume())
    s = report["steerable"]
    assert 0 <= s["hv_ratio"] <= 1 and len(s["per_weight"]) == 3
    assert {t["objective"] for t in s["trend"]} == {"AV", "VC"}
    assert 0 < s["diversity"]["distinct"] <= 1 and report["seconds"]["total"] > 0
