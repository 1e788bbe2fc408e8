"""`feedalign bench ngrams --quick`: the pipeline runs end to end and reports against the exact front."""

from __future__ import annotations

import json

from dataclasses import replace

import numpy as np
import pytest
import torch

from feedalign.bench.ngrams import (
    NGramBenchConfig,
    generation_constraints,
    margin_function,
    prior_letter_probs,
    prior_sequences,
    target_rows,
)
from feedalign.cli.bench_cmd import ngram_overrides
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


def test_prior_letter_probs_are_those_of_the_prior_sequences():
    task = ngram_task(2)
    probs = prior_letter_probs(task, 0.8)
    assert probs.sum() == pytest.approx(1.0)
    letters = "".join(prior_sequences(task, 400, 0.8, seed=3))
    freq = np.array([letters.count(c) for c in task.alphabet]) / len(letters)
    np.testing.assert_allclose(freq, probs, atol=0.01)


def test_generation_constraints_make_every_sample_valid():
    """An untrained model emits stop and non-letter tokens anywhere; constrained, every sample
    is a valid candidate (lengths 32-36, alphabet letters only)."""
    from feedalign.policies.hf import generate
    from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm

    task = ngram_task(2)
    tokenizer = build_char_tokenizer(task.alphabet + "> ")
    model = build_tiny_causal_lm(len(tokenizer), hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, seed=0,
                                 max_position_embeddings=64)
    with torch.no_grad():  # make the stop token and the space likely, so the unconstrained samples fail
        model.get_output_embeddings().bias = None
        model.get_output_embeddings().weight[tokenizer.eos_token_id] *= 0
        model.get_output_embeddings().weight[tokenizer.eos_token_id] += 3 * model.get_input_embeddings().weight.mean(0)
    free = generate(model, tokenizer, [">"] * 24, seed=0, **generation_constraints(task, tokenizer, False))
    kept = generate(model, tokenizer, [">"] * 24, seed=0, **generation_constraints(task, tokenizer))
    assert sum(task.invalid_reason(s) is None for s in free) < 24
    assert all(task.invalid_reason(s) is None for s in kept), [task.invalid_reason(s) for s in kept]
    assert {len(s) for s in kept} <= set(range(32, 37))


def test_target_rows_reach_the_front_when_sharp():
    """The exact pi*_w samples at a sharp target (many nats per occurrence, low temperature)
    reach the front beyond its three vertices (0.706 of its HV); at a large beta they stay near
    the prior."""
    sharp = NGramBenchConfig(beta=0.1, pair_temperature=0.05, samples_per_weight=8, temperatures=(0.5,), sweep_per_axis=5)
    task = sharp.task
    rows = target_rows(sharp, task, task.exact_hypervolume())
    assert rows["nats_per_occurrence"] == pytest.approx(1 / (18 * 0.05 * 0.1))
    assert rows["0.5"]["hv_ratio"] > 0.75 and rows["0.5"]["valid_share"] == 1.0
    flat = target_rows(replace(sharp, beta=50.0), task, task.exact_hypervolume())
    assert flat["0.5"]["hv_ratio"] < 0.6


def test_overrides_are_typed_and_checked():
    got = ngram_overrides(["beta=0.2", "temperatures=1,0.5", "min_weight=none", "sweep_per_axis=5",
                           "constrained=false", "placement=suffix", "draws=3"])
    assert got == {"beta": 0.2, "temperatures": (1.0, 0.5), "min_weight": None, "sweep_per_axis": 5,
                   "constrained": False, "placement": "suffix", "draws": 3}
    for bad in (["beta"], ["seed=1"], ["nope=1"], ["draws=x"], ["constrained=maybe"]):
        with pytest.raises(ValueError, match="--set"):
            ngram_overrides(bad)


def test_cli_rejects_bad_variant_and_settings(capsys):
    assert main(["bench", "ngrams", "--objectives", "5"]) == 2
    assert "2, 3 or 4" in capsys.readouterr().err
    assert main(["bench", "ngrams", "--set", "beta=-1"]) == 2
    assert "beta" in capsys.readouterr().err
    assert main(["bench", "ngrams", "--set", "temperatures=0"]) == 2
    err = capsys.readouterr().err
    assert "temperatures" in err and err.count("\n") == 1


@pytest.mark.slow
def test_quick_run_reports_hv_against_the_exact_front(tmp_path):
    path = tmp_path / "ngrams.json"
    assert main(["bench", "ngrams", "--quick", "--objectives", "2", "--json", str(path),
                 "--output-dir", str(tmp_path / "models")]) == 0
    report = json.loads(path.read_text())
    task = ngram_task(2)
    assert report["task"]["exact_hypervolume"] == pytest.approx(task.exact_hypervolume())
    assert set(report["steerable"]) == set(report["reference"]) == {"1", "0.5"}
    for t, s in report["steerable"].items():
        assert 0 <= s["hv_ratio"] <= 1 and len(s["per_weight"]) == 3
        assert {t["objective"] for t in s["trend"]} == {"AV", "VC"}
        assert 0 < s["diversity"]["distinct"] <= 1
        assert s["valid_share"] == report["reference"][t]["valid_share"] == 1.0  # constrained decoding
        assert 0 < report["target"][t]["hv_ratio"] <= 1
    assert 0 <= report["unconstrained_valid_share"]["steerable"] <= 1 and report["seconds"]["total"] > 0
