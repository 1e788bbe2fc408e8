"""Prompt-shared pair batches: the same log-probs and gradients as the unshared (padded and
packed) pair batch, for Llama and Qwen2 shapes, full fine-tuning and LoRA, every attention
implementation that reads the layout; reward-model scores likewise."""

from __future__ import annotations

import pytest
import torch

from feedalign.data.collate import pack_examples, pad_batch
from feedalign.data.shared_prompt import (
    last_token_positions,
    pack_shared_pairs,
    row_tokens,
    shared_block_mask,
    shared_prefix_length,
)
from feedalign.policies import varlen
from feedalign.policies.hf import batch_logps, naive_sequence_logps
from feedalign.policies.shared_logps import shared_pair_scores
from feedalign.policies.tiny import build_tiny_causal_lm

torch.set_num_threads(1)
VOCAB = 40


def _pairs(spec: list[tuple[int, int, int]], seed: int = 0):
    """(prompt length, chosen length, rejected length) -> chosen rows, rejected rows."""
    g = torch.Generator().manual_seed(seed)
    chosen, rejected = [], []
    for p, c, r in spec:
        prompt = torch.randint(4, VOCAB, (p,), generator=g).tolist()
        for n, out in ((c, chosen), (r, rejected)):
            ids = prompt + torch.randint(4, VOCAB, (n,), generator=g).tolist()
            out.append({"input_ids": ids, "completion_mask": [0] * p + [1] * n})
    return chosen, rejected


# Includes a pair whose completions start with the same token (the shared prefix must stop
# at the completion boundary) and a one-token prompt.
CHOSEN, REJECTED = _pairs([(3, 5, 2), (7, 2, 6), (1, 9, 4), (4, 4, 4)])
REJECTED[3]["input_ids"][4] = CHOSEN[3]["input_ids"][4]


def _model(arch: str, attn: str, lora: bool = False):
    if attn == varlen.VARLEN_ATTENTION:
        varlen.register()
    model = build_tiny_causal_lm(VOCAB, arch=arch, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=48,
                                 seed=1, init_std=0.2, attn_implementation=attn)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    return model


def _grads(model, fn):
    model.zero_grad()
    out = fn()
    (out * torch.linspace(0.5, 1.5, out.numel())).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g.abs().sum() > 0 for g in grads.values())
    return out.detach(), grads


def _assert_grads_close(got: dict, ref: dict) -> None:
    """fp32 agreement to 1e-5 of each gradient's scale (summation order differs)."""
    assert got.keys() == ref.keys()
    for name, grad in ref.items():
        err = (got[name] - grad).abs().max().item()
        assert err <= 1e-5 * (1.0 + grad.abs().max().item()), (name, err)


def test_layout_reconstructs_rows_and_shares_only_the_prompt():
    shared = pack_shared_pairs(CHOSEN, REJECTED)
    rows = CHOSEN + REJECTED
    assert row_tokens(shared) == [(r["input_ids"], r["completion_mask"]) for r in rows]
    assert [shared_prefix_length(c, r) for c, r in zip(CHOSEN, REJECTED)] == [3, 7, 1, 4]
    unshared = sum(len(r["input_ids"]) for r in rows)
    assert shared["input_ids"].shape[1] == unshared - (3 + 7 + 1 + 4)
    assert shared["score_rows"].numel() == sum(sum(r["completion_mask"]) for r in rows)
    last = last_token_positions(shared)
    ids = shared["input_ids"][0]
    assert ids[last].tolist() == [r["input_ids"][-1] for r in rows]


def test_block_mask_hides_the_other_completion():
    c, r = _pairs([(2, 2, 3)])
    mask = shared_block_mask(pack_shared_pairs(c, r))[0, 0].int()
    # row: P P C C R R R; rejected queries see the prompt and themselves, never C.
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0],
        [1, 1, 0, 0, 1, 1, 0],
        [1, 1, 0, 0, 1, 1, 1],
    ])
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", [varlen.VARLEN_ATTENTION, "sdpa", "eager"])
@pytest.mark.parametrize("lora", [False, True])
def test_shared_equals_unshared_values_and_gradients(arch, attn, lora):
    model = _model(arch, attn, lora)
    rows = CHOSEN + REJECTED
    padded = pad_batch(rows, 0)
    ref, ref_grads = _grads(model, lambda: batch_logps(model, padded, chunk_size=7))
    got, got_grads = _grads(model, lambda: batch_logps(model, pack_shared_pairs(CHOSEN, REJECTED), chunk_size=7))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    _assert_grads_close(got_grads, ref_grads)
    assert ref.unique().numel() == len(rows)  # distinct rows: agreement is not vacuous
    if attn == varlen.VARLEN_ATTENTION:
        packed = batch_logps(model, pack_examples(rows), chunk_size=7).detach()
        torch.testing.assert_close(got, packed, rtol=0, atol=1e-5)


def test_shared_equals_naive_full_logits():
    model = _model("llama", "sdpa")
    padded = pad_batch(CHOSEN + REJECTED, 0)
    naive = naive_sequence_logps(model, padded["input_ids"], padded["attention_mask"], padded["completion_mask"])
    got = batch_logps(model, pack_shared_pairs(CHOSEN, REJECTED))
    torch.testing.assert_close(got.detach(), naive.detach(), rtol=0, atol=1e-5)


def test_wrong_attention_would_see_the_chosen_completion():
    """The test above can fail: ignoring the layout (plain causal attention over the row)
    changes the rejected rows' log-probs."""
    model = _model("llama", "sdpa")
    shared = pack_shared_pairs(CHOSEN, REJECTED)
    from feedalign.policies import shared_logps

    good = batch_logps(model, shared).detach()
    real = shared_logps.shared_block_mask
    try:
        shared_logps.shared_block_mask = lambda b, dtype: torch.ones(
            1, 1, b["input_ids"].shape[1], b["input_ids"].shape[1], dtype=torch.bool).tril()
        bad = batch_logps(model, shared).detach()
    finally:
        shared_logps.shared_block_mask = real
    assert (bad[len(CHOSEN):] - good[len(CHOSEN):]).abs().max() > 1e-3


@pytest.mark.parametrize("attn", [varlen.VARLEN_ATTENTION, "sdpa"])
def test_reward_model_scores_and_gradients_equal_unshared(attn):
    from feedalign.policies.reward_model import MultiObjectiveRewardModel

    rm = MultiObjectiveRewardModel.from_causal_lm(_model("qwen2", attn), ["helpful", "harmless"], seed=0)
    rows = CHOSEN + REJECTED
    padded = pad_batch(rows, 0)

    def grads(fn):
        rm.zero_grad()
        out = fn()
        (out * torch.linspace(0.5, 1.5, out.numel()).view(out.shape)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}

    ref, ref_grads = grads(lambda: rm(padded["input_ids"], padded["attention_mask"]))
    got, got_grads = grads(lambda: shared_pair_scores(rm, pack_shared_pairs(CHOSEN, REJECTED)))
    assert got.shape == (len(rows), 2)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    _assert_grads_close(got_grads, ref_grads)


def test_flash_attention_implementation_is_refused():
    from types import SimpleNamespace

    from feedalign.policies.shared_logps import _body_hidden

    model = _model("llama", "sdpa")
    config = SimpleNamespace(_attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="share_prompt"):
        _body_hidden(model.model, pack_shared_pairs(CHOSEN, REJECTED), config)


def test_bad_rows_are_refused():
    c, r = _pairs([(2, 2, 3)])
    with pytest.raises(ValueError, match="pair 0: rejected position 0"):
        pack_shared_pairs(c, [{"input_ids": [5, 6], "completion_mask": [1, 1]}])
    with pytest.raises(ValueError, match="B >= 1"):
        pack_shared_pairs(c, r + r)
