"""Reference strategies: copy, adapter disabled, on-disk cache."""

import copy

import pytest
import torch

from feedalign.data.collate import pack_examples, pad_batch, tokenize_example
from feedalign.policies.hf import naive_sequence_logps, sequence_logps
from feedalign.policies.reference import (
    AdapterReference,
    CachedReference,
    CacheMissError,
    CopyReference,
    Reference,
    make_reference,
    model_fingerprint,
)
from feedalign.policies.tiny import PAD_ID, build_char_tokenizer, build_tiny_causal_lm

ALPHABET = "abcdefghij "
DATA = [("ab", "cde"), ("a b", "j"), ("hh", "ab ab"), ("", "ccc"), ("ij", "g"), ("e", "fghij")]


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def examples(tok):
    return [tokenize_example(tok, p, c, 32) for p, c in DATA]


def base_model(tok, seed=0):
    return build_tiny_causal_lm(len(tok), hidden=32, intermediate=64, init_std=0.3, seed=seed)


def lora_policy(tok):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear")
    return get_peft_model(base_model(tok), config)


def batches(examples, size=2):
    for start in range(0, len(examples), size):
        chunk = examples[start : start + size]
        yield pad_batch(chunk, PAD_ID), [f"ex{start + i}" for i in range(len(chunk))]


def test_adapter_disabled_equals_copy_equals_base_after_training(tok, examples):
    policy = lora_policy(tok)
    copy_ref = CopyReference(policy)  # taken before training: LoRA starts as the identity
    adapter_ref = AdapterReference(policy)
    assert isinstance(copy_ref, Reference) and isinstance(adapter_ref, Reference)
    batch = pad_batch(examples, PAD_ID)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=0.05)
    policy.train()
    for _ in range(3):
        optimizer.zero_grad()
        (-sequence_logps(policy, *args)).mean().backward()
        optimizer.step()
    with torch.no_grad():
        policy.eval()
        trained = sequence_logps(policy, *args)
        policy.train()
    base = naive_sequence_logps(base_model(tok), *args).detach()
    assert (trained - base).abs().max() > 0.5  # the adapter really moved the policy
    keys = [f"k{i}" for i in range(len(examples))]
    from_adapter = adapter_ref.logps(batch, keys)
    from_copy = copy_ref.logps(batch, keys)
    torch.testing.assert_close(from_adapter, base, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(from_copy, base, rtol=1e-5, atol=1e-4)
    assert not from_adapter.requires_grad and from_adapter.dtype == torch.float32
    # The policy is left as it was: adapter enabled, train mode (dropout modules too).
    assert policy.training and all(m.training for m in policy.modules())
    with torch.no_grad():
        policy.eval()
        torch.testing.assert_close(sequence_logps(policy, *args), trained)
        policy.train()


def test_fingerprints(tok):
    plain = base_model(tok)
    policy = lora_policy(tok)
    assert AdapterReference(policy).fingerprint() == model_fingerprint(plain)
    assert model_fingerprint(base_model(tok, seed=1)) != model_fingerprint(plain)
    changed = copy.deepcopy(plain)
    with torch.no_grad():
        changed.model.norm.weight.add_(1e-3)
    assert model_fingerprint(changed) != model_fingerprint(plain)
    assert CopyReference(plain).fingerprint() == model_fingerprint(plain)


def test_packed_batch_through_reference(tok, examples):
    ref = CopyReference(base_model(tok))
    padded = ref.logps(pad_batch(examples, PAD_ID), None)
    packed = ref.logps(pack_examples(examples), [str(i) for i in range(len(examples))])
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="3 example keys for a batch of 6"):
        ref.logps(pack_examples(examples), ["a", "b", "c"])


class CountingReference:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def logps(self, batch, example_keys):
        self.calls += 1
        return self.inner.logps(batch, example_keys)

    def fingerprint(self):
        return self.inner.fingerprint()


def test_cached_reference_reproduces_and_is_reused_across_runs(tok, examples, tmp_path):
    inner = CountingReference(CopyReference(base_model(tok)))
    cache = CachedReference(inner, tmp_path)
    assert cache.precompute(batches(examples)) == len(examples)
    assert inner.calls == 3
    shards = list((tmp_path / inner.fingerprint()).glob("shard-*.pt"))
    assert len(shards) == 1 and not list((tmp_path / inner.fingerprint()).glob(".tmp-*"))
    assert cache.precompute(batches(examples)) == 0 and inner.calls == 3

    # A later run: no model at all, the fingerprint is found on disk.
    reader = CachedReference(None, tmp_path)
    assert reader.fingerprint() == inner.fingerprint() and len(reader) == len(examples)
    for batch, keys in batches(examples, size=3):  # a different batching reads the same entries
        expected = inner.inner.logps(batch, keys)
        assert torch.equal(reader.logps(batch, keys), expected)  # bit-for-bit
    # Keys ignore the batch layout: a packed batch hits the entries written from padded ones.
    packed = reader.logps(pack_examples(examples), [f"ex{i}" for i in range(len(examples))])
    torch.testing.assert_close(packed, inner.inner.logps(pad_batch(examples, PAD_ID), None))
    # Entries are keyed by example key and tokens: a new tokenisation is a miss.
    other = pad_batch([tokenize_example(tok, "ab", "cdd", 32)], PAD_ID)
    with pytest.raises(CacheMissError, match="'ex0'.*precompute"):
        reader.logps(other, ["ex0"])
    with pytest.raises(CacheMissError):
        reader.logps(pad_batch(examples[:1], PAD_ID), ["renamed"])


def test_cached_reference_fills_misses_and_flushes(tok, examples, tmp_path):
    inner = CountingReference(CopyReference(base_model(tok)))
    cache = CachedReference(inner, tmp_path, flush_every=3)
    batch_list = list(batches(examples))
    cache.logps(*batch_list[0])  # 2 pending, below flush_every
    assert not list(tmp_path.rglob("shard-*.pt"))
    cache.logps(*batch_list[1])  # 4 pending -> written
    assert len(list(tmp_path.rglob("shard-*.pt"))) == 1
    cache.logps(*batch_list[0])  # a hit: no model call
    assert inner.calls == 2
    cache.logps(*batch_list[2])
    cache.drop_inner()
    assert cache.inner is None and len(list(tmp_path.rglob("shard-*.pt"))) == 2
    assert len(CachedReference(None, tmp_path, fingerprint=inner.fingerprint())) == len(examples)


def test_cached_reference_needs_a_fingerprint(tmp_path):
    with pytest.raises(ValueError, match="exactly one fingerprint"):
        CachedReference(None, tmp_path)
    (tmp_path / "aaa").mkdir()
    (tmp_path / "bbb").mkdir()
    with pytest.raises(ValueError, match="\\['aaa', 'bbb'\\]"):
        CachedReference(None, tmp_path)
    (tmp_path / "aaa" / "shard-bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="shard-bad.pt"):
        CachedReference(None, tmp_path, fingerprint="aaa")


def test_make_reference(tok, tmp_path):
    plain = base_model(tok)
    assert make_reference("none", plain) is None
    assert isinstance(make_reference("copy", plain), CopyReference)
    with pytest.raises(TypeError, match="peft model"):
        make_reference("adapter", plain)
    policy = lora_policy(tok)
    assert isinstance(make_reference("adapter", policy), AdapterReference)
    cached = make_reference("cached", policy, cache_dir=tmp_path)
    assert isinstance(cached, CachedReference) and isinstance(cached.inner, AdapterReference)
    assert isinstance(make_reference("cached", plain, cache_dir=tmp_path).inner, CopyReference)
    with pytest.raises(ValueError, match="needs cache_dir"):
        make_reference("cached", plain)
    with pytest.raises(ValueError, match="expected one of \\('none', 'copy', 'adapter', 'cached'\\)"):
        make_reference("frozen", plain)


def test_pending_entries_are_written_when_the_cache_is_dropped(tok, examples, tmp_path):
    import gc

    inner = CopyReference(base_model(tok))
    cache = CachedReference(inner, tmp_path)  # flush_every=256: nothing written yet
    cache.logps(*next(batches(examples)))
    assert not list(tmp_path.rglob("shard-*.pt"))
    del cache
    gc.collect()
    assert len(CachedReference(None, tmp_path)) == 2

