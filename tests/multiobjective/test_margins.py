"""MODPO margin sources: shapes, detach, and equality with the manual computations."""

import textwrap

import numpy as np

import pytest
import torch

from feedalign.config.schema import MarginsConfig
from feedalign.data.collate import pad_batch, tokenize_example
from feedalign.multiobjective.margins import (
    MARGIN_SOURCE_FACTORIES,
    CallableMargins,
    ImplicitRewardMargins,
    LengthMargins,
    RewardModelMargins,
    StackedMargins,
    build_margin_source,
)
from feedalign.policies.hf import naive_sequence_logps
from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm, save_tiny

PROMPTS = ["ab", "ba", "cab"]
COMPLETIONS = ["cc", "a", "bca"]
BETA = 0.25


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer("abc ")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer):
    model = build_tiny_causal_lm(len(tokenizer), hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64,
                                 seed=0, init_std=0.2)
    return save_tiny(model, tokenizer, tmp_path_factory.mktemp("base"))


def _lora(model, seed):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    torch.manual_seed(seed)
    return get_peft_model(model, config)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, base_dir):
    from feedalign.policies.hf import load_causal_lm

    peft_model = _lora(load_causal_lm(base_dir, dtype="float32"), seed=7)
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    return out


def _manual_logps(model, tokenizer, prompts, completions):
    batch = pad_batch([tokenize_example(tokenizer, p, c, 64) for p, c in zip(prompts, completions)],
                      tokenizer.pad_token_id)
    with torch.no_grad():
        return naive_sequence_logps(model.eval(), batch["input_ids"], batch["attention_mask"], batch["completion_mask"])


def test_implicit_reward_of_an_adapter_equals_manual_computation(base_dir, adapter_dir, tokenizer):
    from peft import PeftModel

    from feedalign.policies.hf import load_causal_lm

    source = ImplicitRewardMargins.from_pretrained(adapter_dir, beta=BETA, base=str(base_dir), dtype="float32")
    margins = source(PROMPTS, COMPLETIONS)
    assert margins.shape == (3, 1) and margins.dtype == torch.float32 and not margins.requires_grad
    base = load_causal_lm(base_dir, dtype="float32")
    merged = PeftModel.from_pretrained(load_causal_lm(base_dir, dtype="float32"), adapter_dir).merge_and_unload()
    expected = BETA * (_manual_logps(merged, tokenizer, PROMPTS, COMPLETIONS) - _manual_logps(base, tokenizer, PROMPTS, COMPLETIONS))
    torch.testing.assert_close(margins[:, 0], expected, rtol=1e-4, atol=1e-5)
    assert expected.abs().min() > 1e-3  # the adapter really changes the log-probs
    # Batching does not change the values.
    small = ImplicitRewardMargins(source.model, source.tokenizer, beta=BETA, batch_size=1, adapter_name="margin")
    torch.testing.assert_close(small(PROMPTS, COMPLETIONS), margins, rtol=1e-5, atol=1e-6)


def test_margin_adapter_shares_the_training_model_and_leaves_it_untouched(base_dir, adapter_dir, tokenizer):
    """A second adapter on the policy being trained: same values as a separate copy, and the
    policy's active adapter, requires_grad flags and train mode are restored."""
    from feedalign.policies.hf import load_causal_lm, sequence_logps

    policy = _lora(load_causal_lm(base_dir, dtype="float32"), seed=11).train()
    flags = {n: p.requires_grad for n, p in policy.named_parameters()}
    source = ImplicitRewardMargins.attach(policy, adapter_dir, tokenizer, beta=BETA)
    separate = ImplicitRewardMargins.from_pretrained(adapter_dir, beta=BETA, base=str(base_dir), dtype="float32")
    torch.testing.assert_close(source(PROMPTS, COMPLETIONS), separate(PROMPTS, COMPLETIONS), rtol=1e-4, atol=1e-5)
    assert policy.active_adapter == "default"
    assert policy.training
    assert {n: p.requires_grad for n, p in policy.named_parameters() if "margin" not in n} == flags
    assert not any(p.requires_grad for n, p in policy.named_parameters() if ".margin." in n)
    # The policy still computes with its own adapter and gets gradients.
    batch = pad_batch([tokenize_example(tokenizer, "ab", "cc", 64)], tokenizer.pad_token_id)
    logp = sequence_logps(policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    logp.sum().backward()
    grads = [p.grad for n, p in policy.named_parameters() if ".default." in n]
    assert grads and all(g is not None for g in grads)


def test_implicit_reward_of_a_full_model_dir_needs_and_uses_a_reference(base_dir, tmp_path, tokenizer):
    from feedalign.policies.hf import load_causal_lm

    other = build_tiny_causal_lm(len(tokenizer), hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64,
                                 seed=3, init_std=0.2)
    other_dir = save_tiny(other, tokenizer, tmp_path / "other")
    with pytest.raises(ValueError, match="needs `reference`"):
        ImplicitRewardMargins.from_pretrained(other_dir, beta=BETA)
    source = build_margin_source("implicit", str(other_dir), {"beta": BETA, "reference": str(base_dir), "dtype": "float32"})
    expected = BETA * (_manual_logps(other, tokenizer, PROMPTS, COMPLETIONS)
                       - _manual_logps(load_causal_lm(base_dir, dtype="float32"), tokenizer, PROMPTS, COMPLETIONS))
    torch.testing.assert_close(source(PROMPTS, COMPLETIONS)[:, 0], expected, rtol=1e-4, atol=1e-5)


def test_reward_model_margins_select_heads(tmp_path):
    from feedalign.envs.text_task import build_tiny_llama, build_tokenizer
    from feedalign.policies.reward_model import MultiObjectiveRewardModel

    tok = build_tokenizer()
    rm = MultiObjectiveRewardModel.from_causal_lm(build_tiny_llama(tok), ["helpful", "concise", "safe"], seed=1)
    rm.set_normalization([0.5, -1.0, 0.0], [2.0, 4.0, 1.0], "test")
    rm.save(tmp_path / "rm", tok)
    prompts = ["write about fruit with apple pear plum fig :"] * 2
    completions = ["apple .", "ok ."]
    raw = rm.score(tok, prompts, completions, normalize=False)
    source = build_margin_source("reward_model", str(tmp_path / "rm"), {"heads": ["safe", "helpful"], "scale": 2.0})
    got = source(prompts, completions)
    assert got.shape == (2, 2) and not got.requires_grad
    expected = 2.0 * torch.stack([raw[:, 2], (raw[:, 0] - 0.5) / 2.0], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    unnormalised = RewardModelMargins(rm, tok, ["concise"], normalize=False)(prompts, completions)
    torch.testing.assert_close(unnormalised[:, 0], raw[:, 1], rtol=1e-5, atol=1e-5)


def test_length_margins_are_minus_the_length(tokenizer):
    completions = ["ab c", "", "cccc"]
    prompts = ["a"] * 3
    assert LengthMargins("chars")(prompts, completions)[:, 0].tolist() == [-4.0, 0.0, -4.0]
    assert LengthMargins("words", scale=0.5)(prompts, completions)[:, 0].tolist() == [-1.0, 0.0, -0.5]
    # Char tokenizer: one token per character, EOS not counted.
    assert LengthMargins("tokens", tokenizer=tokenizer)(prompts, completions)[:, 0].tolist() == [-4.0, 0.0, -4.0]
    assert build_margin_source("callable", "builtin:length_words")(prompts, completions).shape == (3, 1)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        LengthMargins("tokens")
    with pytest.raises(ValueError, match="unknown built-in margin 'size'"):
        build_margin_source("builtin", "size")


def test_user_callable_from_config_block_is_checked_and_detached(tmp_path, monkeypatch):
    (tmp_path / "my_margins.py").write_text(textwrap.dedent("""
        import torch
        def two_columns(prompts, completions):
            x = torch.tensor([[float(len(p)), -float(len(c))] for p, c in zip(prompts, completions)],
                             requires_grad=True)
            return x * 1.0
        def wrong_rows(prompts, completions):
            return [[0.0]]
        def scaled(factor):
            return lambda prompts, completions: [factor * len(c) for c in completions]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    # Through the trainer's config block and factory table.
    source = MARGIN_SOURCE_FACTORIES["callable"](MarginsConfig(kind="callable", target="my_margins:two_columns"))
    got = source(PROMPTS, COMPLETIONS)
    assert got.shape == (3, 2) and not got.requires_grad
    assert got.tolist() == [[2.0, -2.0], [2.0, -1.0], [3.0, -3.0]]
    # With options the target is a factory.
    scaled = build_margin_source("callable", "my_margins:scaled", {"factor": 2.0})
    assert scaled(PROMPTS, COMPLETIONS)[:, 0].tolist() == [4.0, 2.0, 6.0]
    with pytest.raises(ValueError, match=r"returned shape \(1, 1\) for 3 rows"):
        build_margin_source("callable", "my_margins:wrong_rows")(PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        build_margin_source("callable", "my_margins:missing")
    with pytest.raises(ValueError, match="unknown margin source kind 'rm'"):
        build_margin_source("rm", "x")
    stacked = StackedMargins([source, LengthMargins("chars")])
    assert stacked(PROMPTS, COMPLETIONS).shape == (3, 3)
    stacked_cfg = build_margin_source("stack", options={"sources": [
        {"kind": "callable", "target": "my_margins:two_columns"}, {"kind": "builtin", "target": "length_chars"}]})
    torch.testing.assert_close(stacked_cfg(PROMPTS, COMPLETIONS), stacked(PROMPTS, COMPLETIONS))
    assert CallableMargins(lambda p, c: [1.0] * len(p))(PROMPTS, COMPLETIONS).shape == (3, 1)


def test_trainer_builds_margin_sources_from_config_blocks(base_dir, tmp_path):
    """The trainer's `margins:` block reaches these factories: a MODPO run with a built-in
    length margin trains end to end."""
    from feedalign.data.records import PairRecord
    from feedalign.trainers import train

    pairs = [PairRecord(p, c, r, objective="a") for p, c, r in
             [("ab", "c", "cca"), ("ba", "a", "bbb"), ("cab", "b", "ab c"), ("bb", "ca", "a a a")]]
    config = {
        "model": {"path": str(base_dir), "dtype": "float32"},
        "data": [{"loss": "modpo", "name": "modpo", "objective": "a", "max_length": 32,
                  "hparams": {"beta": 0.5, "weight": 0.7, "margin_weights": [0.3]},
                  "margins": {"kind": "builtin", "target": "length_chars", "options": {"scale": 0.5}}}],
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "micro_batch_size": 2, "cpu": True,
                  "lr": 1e-3, "log_every": 1},
    }
    result = train(config, records={"modpo": pairs})
    assert result.steps == 2
    assert "loss" in result.metrics and np.isfinite(result.metrics["loss"])
