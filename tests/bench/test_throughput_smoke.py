"""bench/throughput.py: the workload both frameworks see, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from timeouts import subprocess_timeout

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import _throughput_workload as wl  # noqa: E402


def test_token_counts_by_hand() -> None:
    pairs = [
        {"prompt_ids": [4, 5, 6], "chosen_ids": [7], "rejected_ids": [8, 9]},
        {"prompt_ids": [4], "chosen_ids": [7, 7, 7, 7], "rejected_ids": [9]},
    ]
    # pair 1: 2*3 + 1 + 2 + 2 EOS = 11; pair 2: 2*1 + 4 + 1 + 2 = 9
    assert wl.tokens_per_step(pairs, 2) == [20]
    assert wl.tokens_per_step(pairs, 1) == [11, 9]
    # padded [2B, T_max]: longest row is pair 2's chosen side, 1 + 4 + EOS = 6 -> 4 rows x 6
    assert wl.padded_tokens_per_step(pairs, 2) == [24]


def test_flops_per_token() -> None:
    assert wl.train_flops_per_token(10, reference_forward=False) == 60
    assert wl.train_flops_per_token(10, reference_forward=True) == 80


def test_synthetic_pairs_respect_lengths_and_seed() -> None:
    shape = wl.SIZES["small"]
    pairs = wl.make_pairs(shape, 50, seed=3)
    assert pairs == wl.make_pairs(shape, 50, seed=3)
    assert pairs != wl.make_pairs(shape, 50, seed=4)
    for p in pairs:
        assert shape.prompt_len[0] <= len(p["prompt_ids"]) <= shape.prompt_len[1]
        for side in ("chosen_ids", "rejected_ids"):  # + EOS = the completion length
            assert shape.completion_len[0] <= len(p[side]) + 1 <= shape.completion_len[1]
        ids = p["prompt_ids"] + p["chosen_ids"] + p["rejected_ids"]
        assert min(ids) >= wl.FIRST_WORD_ID and max(ids) < shape.vocab


def test_text_round_trips_to_the_same_token_ids() -> None:
    """feedalign's tokenisation of the rendered text gives back the synthetic ids + EOS, so
    the token budget counted by the benchmark is the one trained on."""
    from feedalign.data.collate import tokenize_example

    shape = wl.SIZES["tiny"]
    tokenizer = wl.build_tokenizer(shape.vocab)
    pairs = wl.make_pairs(shape, 4, seed=0)
    for pair, text in zip(pairs, wl.pair_texts(pairs)):
        row = tokenize_example(tokenizer, text["prompt"], text["chosen"], 4096)
        assert row["input_ids"] == pair["prompt_ids"] + pair["chosen_ids"] + [wl.EOS_ID]
        assert sum(row["completion_mask"]) == len(pair["chosen_ids"]) + 1
    rows = wl.unpaired_texts(pairs)
    assert [r["label"] for r in rows] == [True, False] * len(pairs)


def test_model_shape_is_qwen2_with_tied_embeddings() -> None:
    import torch

    shape = wl.SIZES["tiny"]
    model = wl.build_model(shape, dtype=torch.float32)
    assert model.config.model_type == "qwen2"
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.config.num_key_value_heads == shape.kv_heads


@pytest.mark.slow  # two frameworks, twelve configurations: ~10-40 s on 2 busy cores
def test_tiny_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    command = [sys.executable, str(BENCH / "throughput.py"), "--size", "tiny", "--steps", "3", "--warmup", "1",
               "--levers", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=subprocess_timeout(300))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "tokens/s" in done.stdout
    report = json.loads(out.read_text())
    pairs = wl.make_pairs(wl.SIZES["tiny"], 8 * 3, seed=0)
    assert report["tokens_per_step_mean"] == pytest.approx(sum(wl.tokens_per_step(pairs, 8)) / 3)
    assert report["device"].startswith("cpu-") and report["clock"] == "process_cpu_time"
    names = {(r["framework"], r["loss"], r["config"]) for r in report["rows"]}
    assert names == {
        ("trl", "dpo", "default"), ("trl", "dpo", "precomputed-ref"), ("trl", "kto", "default"),
        ("feedalign", "dpo", "copy-ref"), ("feedalign", "dpo", "cached-ref"), ("feedalign", "dpo", "packed"),
        ("feedalign", "kto", "copy-ref"), ("feedalign", "kto", "cached-ref"), ("feedalign", "kto", "packed"),
        ("lab", "dpo", "padded"), ("lab", "dpo", "packed-sdpa"), ("lab", "dpo", "packed-varlen"),
        ("lab", "dpo", "naive-logps"), ("lab", "dpo", "mb16"),
    }
    for row in report["rows"]:
        assert row["tokens_per_s"] > 0 and math.isfinite(row["tokens_per_s"])
        assert 0 < row["mfu"] and row["wall_s"] > 0 and row["steps"] == 3
        # At step 1 the policy equals the reference: DPO loss = -log sigmoid(0) = log 2 and
        # KTO loss = 1 - sigmoid(0) = 0.5 (KL point clamped at 0) in both frameworks.
        expected = math.log(2) if row["loss"] == "dpo" else 0.5
        assert row["first_losses"][0] == pytest.approx(expected, abs=1e-5)
    assert set(report["ratios"]) >= {"dpo_vs_trl_best", "dpo_vs_trl_default", "kto_vs_trl_default"}
    assert {t["name"] for t in report["targets"]} == {"dpo_vs_trl_best", "dpo_vs_trl_default", "kto_vs_trl_default"}
    for target in report["targets"]:
        assert isinstance(target["met"], bool)
        assert target["ratio"] == pytest.approx(report["ratios"][target["name"]])
        memory_ok = target.get("memory_at_most_trl") is not False
        assert target["met"] == (target["ratio"] >= target["target_ratio"] and memory_ok)


def test_cached_reference_serves_every_lookup_during_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached-ref and packed configurations run no reference forward inside the training
    steps: the trainer fills the cache before training by replaying its own sampler, so
    every lookup (KTO's rotated KL rows included) is a hit."""
    import torch

    import _throughput_feedalign as fa
    import feedalign.trainers as trainers
    from feedalign.policies import reference

    calls: list[int] = []
    original = reference.CopyReference.logps
    monkeypatch.setattr(reference.CopyReference, "logps",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    seen: list[int] = []

    class Count(trainers.TrainerCallback):
        def on_step_end(self, step, metrics):
            seen.append(len(calls))

    real_train = trainers.train
    monkeypatch.setattr(trainers, "train",
                        lambda config, **kw: real_train(config, **{**kw, "callbacks": [*kw["callbacks"], Count()]}))
    shape = wl.SIZES["tiny"]
    model_dir, tokenizer_dir, _ = wl.save_workload_model(shape, str(tmp_path / "w"), dtype=torch.float32)
    pairs = wl.make_pairs(shape, 8 * 3, seed=0)
    for loss in ("dpo", "kto"):
        for packing in (False, True):
            calls.clear()
            seen.clear()
            result = fa.run_feedalign(
                loss, model_dir=model_dir, tokenizer_dir=tokenizer_dir, pairs=pairs, steps=3,
                device=torch.device("cpu"), dtype=torch.float32, output_dir=str(tmp_path / f"{loss}{packing}"),
                reference="cached", extra={"packing": packing},
            )
            assert len(result.step_ends) == 3
            # the fill ran before step 1, and no reference forward ran after it
            assert seen[0] > 0 and seen == [seen[0]] * 3, f"{loss} packing={packing}: {seen}"


def test_packed_varlen_attention_matches_padded_batch(tmp_path: Path) -> None:
    """The padding-free lever computes the same per-sequence log-probs as a padded batch
    through eager attention (fp32: rounding only)."""
    import torch

    import _throughput_levers as lv
    from feedalign.policies.hf import load_causal_lm, load_tokenizer

    shape = wl.SIZES["tiny"]
    model_dir, tokenizer_dir, _ = wl.save_workload_model(shape, str(tmp_path), dtype=torch.float32, seed=1)
    tokenizer = load_tokenizer(tokenizer_dir)
    data = lv._tokenised(tokenizer, wl.make_pairs(shape, 6, seed=2))
    rows = [c for c, _ in data] + [r for _, r in data]
    cpu = torch.device("cpu")
    with torch.no_grad():
        eager = load_causal_lm(model_dir, dtype=torch.float32, attn_implementation="eager")
        expected = lv._logps(eager, lv._batch(rows, "padded", 0, cpu), False)
        varlen = load_causal_lm(model_dir, dtype=torch.float32, attn_implementation=lv._register_varlen())
        got = lv._logps(varlen, lv._batch(rows, "packed", 0, cpu), False)
    assert got.shape == (len(rows),)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert float(expected.std()) > 1.0  # rows differ: a mix-up of sequences would show
