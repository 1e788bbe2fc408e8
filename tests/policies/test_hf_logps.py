"""Chunked per-sequence log-probs against the full-logits reference."""

import pytest
import torch

from feedalign.data.collate import pack_examples, pad_batch, tokenize_example
from feedalign.policies.hf import (
    batch_logps,
    naive_sequence_logps,
    packed_sequence_logps,
    sequence_logps,
    token_counts,
)
from feedalign.policies.tiny import PAD_ID, build_char_tokenizer, build_tiny_causal_lm

ALPHABET = "abcdefghij "
EXAMPLES = [("ab c", "def"), ("a", "bcdefg hij"), ("", "j"), ("hhh ii", "a b")]


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def examples(tok):
    return [tokenize_example(tok, p, c, 32) for p, c in EXAMPLES]


@pytest.fixture(scope="module")
def batch(examples):
    return pad_batch(examples, PAD_ID)


def tiny(tok, **kw):
    kw.setdefault("init_std", 0.3)  # peaky distributions make the comparison discriminating
    return build_tiny_causal_lm(len(tok), hidden=32, intermediate=64, **kw)


def grads(model, logps, weights):
    model.zero_grad(set_to_none=True)
    (logps * weights).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


WEIGHTS = torch.tensor([1.0, -0.5, 2.0, 0.25])  # a non-uniform upstream gradient


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("tied", [False, True])
def test_chunked_equals_naive_values_and_gradients(tok, batch, arch, tied):
    model = tiny(tok, arch=arch, tie_word_embeddings=tied, seed=3)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    naive = naive_sequence_logps(model, *args)
    naive_grads = grads(model, naive, WEIGHTS)
    assert tied == (model.lm_head.weight is model.model.embed_tokens.weight)
    for chunk_size in (1, 5, 10_000):
        chunked = sequence_logps(model, *args, chunk_size=chunk_size)
        assert chunked.dtype == torch.float32 and chunked.shape == (4,)
        torch.testing.assert_close(chunked, naive, rtol=1e-5, atol=1e-5)
        chunked_grads = grads(model, chunked, WEIGHTS)
        assert chunked_grads.keys() == naive_grads.keys()
        for name, g in naive_grads.items():
            torch.testing.assert_close(chunked_grads[name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_matches_hand_computed_sum(tok, examples, batch):
    model = tiny(tok, seed=1)
    got = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], chunk_size=3)
    for b, ex in enumerate(examples):  # one sequence at a time, no padding, explicit loop over tokens
        ids = torch.tensor([ex["input_ids"]])
        logits = model(input_ids=ids).logits[0].double()
        total = sum(
            torch.log_softmax(logits[t - 1], -1)[ids[0, t]].item()
            for t in range(1, ids.shape[1])
            if ex["completion_mask"][t]
        )
        assert got[b].item() == pytest.approx(total, abs=1e-4)
    assert token_counts(batch["completion_mask"]).tolist() == [4, 11, 2, 4]


def test_bf16_model_uses_fp32_logprob_math(tok, batch):
    model = tiny(tok, seed=2, dtype=torch.bfloat16)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    naive = naive_sequence_logps(model, *args)
    naive_grads = grads(model, naive, WEIGHTS)
    chunked = sequence_logps(model, *args, chunk_size=4)
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, naive, rtol=1e-3, atol=1e-2)
    chunked_grads = grads(model, chunked, WEIGHTS)
    for name, g in naive_grads.items():
        assert chunked_grads[name].dtype == torch.bfloat16
        scale = g.float().abs().max().item() + 1e-3
        err = (chunked_grads[name].float() - g.float()).abs().max().item()
        assert err <= 0.05 * scale, (name, err, scale)


def test_lm_head_with_bias(tok, batch):
    model = tiny(tok, seed=4)
    old = model.lm_head
    model.lm_head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        model.lm_head.weight.copy_(old.weight)
        model.lm_head.bias.copy_(torch.linspace(-2.0, 2.0, old.out_features))
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    naive = naive_sequence_logps(model, *args)
    naive_grads = grads(model, naive, WEIGHTS)
    chunked = sequence_logps(model, *args, chunk_size=3)
    torch.testing.assert_close(chunked, naive, rtol=1e-5, atol=1e-5)
    chunked_grads = grads(model, chunked, WEIGHTS)
    torch.testing.assert_close(chunked_grads["lm_head.bias"], naive_grads["lm_head.bias"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(chunked_grads["lm_head.weight"], naive_grads["lm_head.weight"], rtol=1e-4, atol=1e-6)


def test_final_logit_softcapping_gemma2(tok, batch):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=2.0, initializer_range=0.3,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    naive = naive_sequence_logps(model, *args)
    naive_grads = grads(model, naive, WEIGHTS)
    chunked = sequence_logps(model, *args, chunk_size=5)
    torch.testing.assert_close(chunked, naive, rtol=1e-5, atol=1e-5)
    chunked_grads = grads(model, chunked, WEIGHTS)
    for name, g in naive_grads.items():
        torch.testing.assert_close(chunked_grads[name], g, rtol=1e-4, atol=1e-5, msg=name)
    # The cap binds here: without it the log-probs are different (and still reproduced).
    model.config.final_logit_softcapping = None
    uncapped = naive_sequence_logps(model, *args)
    assert (uncapped - naive).abs().max().item() > 0.1
    torch.testing.assert_close(sequence_logps(model, *args, chunk_size=5), uncapped, rtol=1e-5, atol=1e-5)


def test_unknown_logit_postprocessing_is_refused(tok, batch):
    from transformers import LlamaForCausalLM

    class DoubledLogits(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0
            return out

    source = tiny(tok, seed=5)
    model = DoubledLogits(source.config)
    with pytest.raises(NotImplementedError, match="naive_sequence_logps"):
        sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])


def test_peft_lora_model_and_lora_on_lm_head(tok, batch):
    from peft import LoraConfig, get_peft_model

    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    for targets in (["q_proj", "v_proj"], ["q_proj", "lm_head"]):
        base = tiny(tok, seed=6)
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
        naive = naive_sequence_logps(model, *args)
        naive_grads = grads(model, naive, WEIGHTS)
        assert naive_grads and all("lora_" in n for n in naive_grads)
        chunked = sequence_logps(model, *args, chunk_size=3)
        torch.testing.assert_close(chunked, naive, rtol=1e-5, atol=1e-5)
        chunked_grads = grads(model, chunked, WEIGHTS)
        assert chunked_grads.keys() == naive_grads.keys()
        for name, g in naive_grads.items():
            torch.testing.assert_close(chunked_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_never_materialises_full_vocab_logits_for_backward(tok, batch):
    model = tiny(tok, seed=7)
    vocab = len(tok)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])

    def saved_vocab_shapes(fn):
        shapes = []

        def pack(t):
            if t.dim() >= 2 and t.shape[-1] == vocab:
                shapes.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(model, *args)
        return shapes

    assert saved_vocab_shapes(naive_sequence_logps)  # the check can see full logits...
    assert saved_vocab_shapes(lambda *a: sequence_logps(*a, chunk_size=2)) == []  # ...and none are kept here


def test_position_zero_cannot_be_scored(tok, batch):
    model = tiny(tok)
    bad = batch["completion_mask"].clone()
    bad[0, 0] = 1
    with pytest.raises(ValueError, match="completion_mask\\[:, 0\\]"):
        sequence_logps(model, batch["input_ids"], batch["attention_mask"], bad)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("explicit_mask", [False, True])
def test_packed_equals_padded(tok, examples, batch, attn, explicit_mask):
    model = tiny(tok, seed=8, attn_implementation=attn)
    padded = naive_sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    packed = pack_examples(examples)
    got = packed_sequence_logps(model, packed, chunk_size=4, explicit_mask=explicit_mask)
    torch.testing.assert_close(got, padded, rtol=1e-5, atol=1e-4)
    if not explicit_mask:
        torch.testing.assert_close(batch_logps(model, packed), padded, rtol=1e-5, atol=1e-4)
    # Sanity: without the per-example positions the examples contaminate each other.
    mixed = sequence_logps(model, packed["input_ids"], None, packed["completion_mask"])
    assert abs(mixed.item() - padded.sum().item()) > 1e-2
