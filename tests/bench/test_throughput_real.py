"""bench/throughput.py --workload real: the UltraFeedback-shaped set in real token lengths,
the pairs both frameworks see, the configuration set, per-tuning ratios, the liger probe,
and (when the SmolLM2 GGUF file is at hand) the dequantised model."""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import _throughput_real as rl  # noqa: E402
import throughput  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from feedalign.policies.tiny import build_char_tokenizer

    tok = build_char_tokenizer(string.ascii_letters + " .<>", add_bos=False)
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    return tok


def test_rows_are_ultrafeedback_shaped_and_sized_in_tokens(tokenizer):
    rows = rl.make_ultrafeedback_rows(tokenizer, 12, seed=0, prompt_len=(30, 60), completion_len=(20, 40))
    assert rows == rl.make_ultrafeedback_rows(tokenizer, 12, seed=0, prompt_len=(30, 60), completion_len=(20, 40))
    for row in rows:
        assert set(row) == {"prompt_id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected"}
        assert [m["role"] for m in row["chosen"]] == ["user", "assistant"] == [m["role"] for m in row["rejected"]]
        assert row["chosen"][0] == row["rejected"][0] == {"role": "user", "content": row["prompt"]}
        assert row["score_chosen"] > row["score_rejected"]
    pairs = rl.pairs_from_rows(tokenizer, rows)
    for pair in pairs:
        assert 30 - 2 <= len(pair["prompt_ids"]) <= 60 + 2
        for side in ("chosen_ids", "rejected_ids"):
            assert 20 - 2 <= len(pair[side]) + 1 <= 40 + 2  # + the EOS both frameworks append
    lengths = {len(p["prompt_ids"]) for p in pairs}
    assert len(lengths) > 3  # drawn, not constant


def test_pairs_carry_the_rendered_chat_prompt_and_feedalign_ids(tokenizer):
    from feedalign.data.collate import tokenize_example

    rows = rl.make_ultrafeedback_rows(tokenizer, 2, seed=1, prompt_len=(20, 30), completion_len=(10, 20))
    (pair, _) = rl.pairs_from_rows(tokenizer, rows)
    assert pair["prompt"].startswith("<user>") and pair["prompt"].endswith("<assistant>")
    assert pair["chosen"] == rows[0]["chosen"][1]["content"]
    tokens = tokenize_example(tokenizer, pair["prompt"], pair["chosen"], 4096)
    assert tokens["input_ids"] == pair["prompt_ids"] + pair["chosen_ids"] + [tokenizer.eos_token_id]
    import _throughput_workload as wl

    assert wl.pair_texts([pair])[0] == {k: pair[k] for k in ("prompt", "chosen", "rejected")}


def test_real_configuration_set():
    configs = throughput._selected("", None, "real")
    names = {(c.framework, c.loss, c.tuning, c.name) for c in configs}
    for tuning in ("full", "lora"):
        assert {("trl", "dpo", tuning, "precomputed-ref"), ("feedalign", "dpo", tuning, "shared")} <= names
    assert ("trl", "dpo", "full", "default") in names
    assert ("trl", "kto", "full", "default") in names and ("feedalign", "kto", "full", "packed") in names
    shared = next(c for c in configs if c.name == "shared")
    assert shared.options["extra"] == {"packing": True, "share_prompt": True}
    assert {c.tuning for c in throughput._selected("feedalign/lora", None, "real")} == {"lora"}


def _row(framework, loss, config, tuning, tps, mem):
    return throughput.Row(framework, loss, config, tuning, tps, 1.0, mem, "rss_delta", 0.1, 1.0, 1.0, 3, "")


def test_ratios_per_tuning_and_memory_verdict():
    rows = [
        _row("trl", "dpo", "default", "full", 100, 2.0), _row("trl", "dpo", "precomputed-ref", "full", 150, 2.0),
        _row("feedalign", "dpo", "shared", "full", 300, 1.0),
        _row("trl", "dpo", "precomputed-ref", "lora", 200, 1.0), _row("feedalign", "dpo", "shared", "lora", 280, 1.5),
    ]
    ratios, targets = throughput._ratios(rows, throughput.REAL_TARGETS)
    assert ratios["dpo_vs_trl_best"] == pytest.approx(2.0)
    assert ratios["dpo_vs_trl_best_lora"] == pytest.approx(1.4)
    by_name = {t["name"]: t for t in targets}
    assert by_name["dpo_vs_trl_best"]["met"] is True
    assert by_name["dpo_vs_trl_best_lora"]["met"] is False
    assert by_name["dpo_vs_trl_best_lora"]["memory_at_most_trl"] is False
    assert {"dpo_vs_trl_default", "kto_vs_trl_default", "kto_vs_trl_best"} <= {t[0] for t in throughput.REAL_TARGETS}


def test_liger_probe_reports_why_not_on_cpu():
    ok, why = rl.liger_status(torch.device("cpu"))
    assert isinstance(ok, bool) and why
    if not ok:
        assert "liger-kernel" in why


def test_range_option_validates():
    assert rl._range("5,9", (1, 2), "--x") == (5, 9)
    assert rl._range(None, (1, 2), "--x") == (1, 2)
    with pytest.raises(SystemExit, match="--x"):
        rl._range("9,5", (1, 2), "--x")


@pytest.mark.skipif(not os.environ.get("FEEDALIGN_SMOLLM2_GGUF"), reason="set FEEDALIGN_SMOLLM2_GGUF to the GGUF file")
def test_dequantised_model_matches_the_gguf_load(tmp_path):
    from transformers import AutoModelForCausalLM

    gguf = rl.find_gguf()
    model_dir, tokenizer_dir, n_params = rl.save_real_model(gguf, str(tmp_path), dtype=torch.float32)
    saved = AutoModelForCausalLM.from_pretrained(model_dir)
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, direct(ids).logits)
    assert 130e6 < n_params < 140e6
