"""Padding-free (packed) log-probs and the ``feedalign_varlen`` attention implementation:
the same values and gradients as the padded path, for Llama and Qwen2 shapes, with every
attention implementation that can run on a CPU."""

from __future__ import annotations

import pytest
import torch

from feedalign.data.collate import pack_examples, pad_batch
from feedalign.policies import varlen
from feedalign.policies.hf import packed_sequence_logps, sequence_logps
from feedalign.policies.tiny import build_tiny_causal_lm
from feedalign.data.batching import concat_rows

torch.set_num_threads(1)
VOCAB = 40


def _rows(lengths: list[tuple[int, int]], seed: int = 0) -> list[dict[str, list[int]]]:
    """(prompt length, completion length) -> tokenised examples with random ids."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for p, c in lengths:
        ids = torch.randint(4, VOCAB, (p + c,), generator=g).tolist()
        rows.append({"input_ids": ids, "completion_mask": [0] * p + [1] * c})
    return rows


ROWS = _rows([(3, 5), (7, 2), (1, 9), (4, 4), (6, 1)])


def _model(arch: str, attn: str):
    if attn == varlen.VARLEN_ATTENTION:
        varlen.register()
    return build_tiny_causal_lm(VOCAB, arch=arch, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=48,
                                seed=1, init_std=0.2, attn_implementation=attn)


def _padded(model, rows):
    b = pad_batch(rows, 0)
    return sequence_logps(model, b["input_ids"], b["attention_mask"], b["completion_mask"], chunk_size=7)


def _grads(model, fn):
    model.zero_grad()
    out = fn()
    (out * torch.linspace(0.5, 1.5, out.numel())).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager", varlen.VARLEN_ATTENTION])
def test_packed_equals_padded_values_and_gradients(arch, attn):
    model = _model(arch, attn)
    padded, padded_grads = _grads(model, lambda: _padded(model, ROWS))
    packed, packed_grads = _grads(model, lambda: packed_sequence_logps(model, pack_examples(ROWS), chunk_size=7))
    torch.testing.assert_close(packed, padded, rtol=0, atol=2e-5)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=2e-5, msg=name)
    # The rows differ, so agreement is not vacuous; packing must not mix sequences.
    assert padded.unique().numel() == len(ROWS)


def test_varlen_runs_per_sequence_and_builds_no_mask(monkeypatch):
    model = _model("qwen2", varlen.VARLEN_ATTENTION)
    calls = []
    real = varlen._per_sequence

    def spy(query, key, value, bounds, scaling):
        calls.append(list(bounds))
        return real(query, key, value, bounds, scaling)

    monkeypatch.setattr(varlen, "_per_sequence", spy)
    from transformers import masking_utils

    masks = []
    real_mask = masking_utils.sdpa_mask
    monkeypatch.setattr(masking_utils, "sdpa_mask", lambda *a, **k: masks.append(1) or real_mask(*a, **k))
    packed = pack_examples(ROWS)
    packed_sequence_logps(model, packed)
    assert calls == [packed["cu_seqlens"].tolist()] * model.config.num_hidden_layers
    assert masks == []  # no [S, S] mask is materialised for a packed row


def test_varlen_model_still_handles_padded_batches_and_generation():
    from feedalign.policies.hf import generate
    from feedalign.policies.tiny import build_char_tokenizer

    sdpa, fast = _model("llama", "sdpa"), _model("llama", varlen.VARLEN_ATTENTION)
    torch.testing.assert_close(_padded(fast, ROWS), _padded(sdpa, ROWS), rtol=0, atol=1e-5)
    tokenizer = build_char_tokenizer("abcdefgh ")
    a = build_tiny_causal_lm(len(tokenizer), seed=2, attn_implementation="sdpa")
    b = build_tiny_causal_lm(len(tokenizer), seed=2, attn_implementation=varlen.register())
    prompts = ["abc", "h", "gfedcba"]  # different lengths: left padding + KV cache
    assert generate(a, tokenizer, prompts, max_new_tokens=6, seed=0) == generate(
        b, tokenizer, prompts, max_new_tokens=6, seed=0
    )


def test_flash_layout_conversion_with_a_reference_kernel():
    """``_flash_varlen`` hands [S, H, D] tensors and cumulative lengths to the kernel and
    returns transformers' [1, S, H, D]; checked with a kernel written from the definition."""

    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        assert q.dim() == 3 and cu_q.dtype == torch.int32 and window_size == (-1, 0) and enable_gqa
        assert max_q == max_k == int((cu_q[1:] - cu_q[:-1]).max())
        out = []
        for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            out.append(torch.nn.functional.scaled_dot_product_attention(
                q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1),
                is_causal=True, scale=scale, enable_gqa=True).transpose(0, 1))
        return torch.cat(out)

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, 13, 8, generator=g) for h in (4, 2, 2))
    cu = torch.tensor([0, 5, 6, 13], dtype=torch.int32)
    params = frozenset({"scale", "window_size", "enable_gqa"})
    got = varlen._flash_varlen((kernel, params), q, k, v, cu, 7, 0.3)
    expected = varlen._per_sequence(q, k, v, cu.tolist(), 0.3)
    assert got.shape == (1, 13, 4, 8)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_concat_of_packed_batches_equals_packing_all_rows():
    a, b = pack_examples(ROWS[:2]), pack_examples(ROWS[2:])
    joined, whole = concat_rows(a, b, pad_id=0), pack_examples(ROWS)
    assert joined.keys() == whole.keys()
    for key, value in whole.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(joined[key], value), key
        else:
            assert joined[key] == value, key
    with pytest.raises(ValueError, match="packed batch with a padded one"):
        concat_rows(a, pad_batch(ROWS[:1], 0), pad_id=0)


def test_varlen_rejects_what_it_does_not_implement():
    q = torch.zeros(1, 2, 4, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="sliding-window"):
        varlen.varlen_attention(None, q, q, q, None, cu_seq_lens_q=cu, sliding_window=2)
    with pytest.raises(NotImplementedError, match="dropout"):
        varlen.varlen_attention(None, q, q, q, None, 0.1, cu_seq_lens_q=cu)
