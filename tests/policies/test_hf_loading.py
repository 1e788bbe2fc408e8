"""Loading models and tokenizers from local directories, and generation."""

import pytest
import torch

from feedalign.data.collate import pad_batch, tokenize_example
from feedalign.policies import hf
from feedalign.policies.hf import generate, load_causal_lm, load_tokenizer, resolve_dtype, sequence_logps
from feedalign.policies.tiny import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    build_char_tokenizer,
    build_tiny_causal_lm,
    save_tiny,
)

ALPHABET = "abcdefghij "


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tok = build_char_tokenizer(ALPHABET)
    model = build_tiny_causal_lm(len(tok), hidden=32, intermediate=64, init_std=0.3, seed=11)
    directory = save_tiny(model, tok, tmp_path_factory.mktemp("tiny"))
    return model, tok, directory


def test_char_tokenizer_round_trip(tmp_path):
    tok = build_char_tokenizer(ALPHABET, save_dir=tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = "ab cj ih"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded(text)["input_ids"][0] == BOS_ID and len(loaded(text)["input_ids"]) == len(text) + 1
    assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id) == (
        PAD_ID, BOS_ID, EOS_ID, UNK_ID,
    )  # fmt: skip
    assert len(loaded) == 4 + len(ALPHABET)
    assert loaded("aZ", add_special_tokens=False)["input_ids"] == [4, UNK_ID]


def test_word_tokenizer_round_trip(tmp_path):
    words = ["hello", "world", "good", "bad"]
    build_char_tokenizer(words, save_dir=tmp_path)
    loaded = load_tokenizer(tmp_path)
    ids = loaded("good  world", add_special_tokens=False)["input_ids"]
    assert ids == [6, 5]
    assert loaded.decode(ids) == "good world"
    with pytest.raises(ValueError, match="clash"):
        build_char_tokenizer(["<eos>", "a"])


def test_load_tokenizer_pads_with_eos_when_missing(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<eos>": 0, "<unk>": 1, "a": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>").save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == "<eos>" and loaded.pad_token_id == 0


def test_load_causal_lm_from_local_dir(saved):
    model, tok, directory = saved
    loaded = load_causal_lm(directory, dtype="float32")
    ids = torch.tensor([tok("ab cd")["input_ids"]])
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert next(loaded.parameters()).dtype == torch.float32
    bf16 = load_causal_lm(directory, dtype="bfloat16", attn_implementation="eager")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    assert bf16.config._attn_implementation == "eager"


def test_load_causal_lm_with_lora_and_checkpointing(saved):
    model, tok, directory = saved
    policy = load_causal_lm(
        directory, dtype="float32", lora={"r": 4, "alpha": 8, "dropout": 0.0}, gradient_checkpointing=True
    )
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any(getattr(m, "gradient_checkpointing", False) for m in policy.modules())
    assert policy.config.use_cache is False
    batch = pad_batch([tokenize_example(tok, "ab", "cd", 16), tokenize_example(tok, "a", "bcd e", 16)], PAD_ID)
    policy.train()
    logps = sequence_logps(policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    logps.sum().backward()
    assert all(p.grad is not None for n, p in policy.named_parameters() if "lora_B" in n)
    # LoRA starts as the identity: the log-probs are the base model's.
    expected = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    torch.testing.assert_close(logps.detach(), expected.detach(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown keys \\['rank'\\]"):
        load_causal_lm(directory, lora={"rank": 4})


def test_missing_path_fails_before_loading(monkeypatch, tmp_path):
    import transformers

    def boom(*args, **kwargs):
        raise AssertionError("from_pretrained must not be reached")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    missing = tmp_path / "no" / "such" / "model"
    for path in (missing, str(missing), "./not/a/model/dir", "~/nothing-here"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_causal_lm(path)
    with pytest.raises(FileNotFoundError, match="no/such/model"):
        load_tokenizer(missing)
    # A plausible hub id is handed on (here to the patched loader).
    with pytest.raises(AssertionError, match="must not be reached"):
        load_causal_lm("some-org/some-model")
    # No 'org/name' shape, or an existing parent directory: a local path, refused at once.
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf._resolve_source("gpt2", "x")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf._resolve_source("runs/typo", "x")
    assert hf._resolve_source("some-org/some-model", "x") == "some-org/some-model"


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32 and resolve_dtype("bf16") is torch.bfloat16
    expected = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    assert resolve_dtype("auto") is expected
    with pytest.raises(ValueError, match="dtype='float8'"):
        resolve_dtype("float8")


def test_generate_is_seeded_and_leaves_global_rng_alone(saved):
    model, tok, _ = saved
    prompts = ["ab", "c d", "hij", "a", "bb", "ee"]
    state = torch.get_rng_state()
    first = generate(model, tok, prompts, max_new_tokens=6, temperature=1.0, top_p=1.0, seed=3, batch_size=4)
    assert torch.equal(torch.get_rng_state(), state)
    again = generate(model, tok, prompts, max_new_tokens=6, temperature=1.0, top_p=1.0, seed=3, batch_size=4)
    other = generate(model, tok, prompts, max_new_tokens=6, temperature=1.0, top_p=1.0, seed=4, batch_size=4)
    assert first == again
    assert first != other
    assert len(first) == len(prompts) and all(set(t) <= set(ALPHABET) and len(t) <= 6 for t in first)
    model.train()  # generation runs in eval mode and restores the caller's mode
    generate(model, tok, ["a"], max_new_tokens=2, temperature=0.0)
    assert model.training
    model.eval()


def test_greedy_generation_matches_argmax_and_left_padding(saved):
    model, tok, _ = saved
    prompts = ["abc dd", "e"]
    greedy = generate(model, tok, prompts, max_new_tokens=5, temperature=0.0, batch_size=2)
    for prompt, text in zip(prompts, greedy):
        ids = tok(prompt)["input_ids"]
        out = []
        with torch.no_grad():
            for _ in range(5):
                nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
                if nxt == EOS_ID:
                    break
                ids.append(nxt)
                out.append(nxt)
        assert text == tok.decode(out, skip_special_tokens=True)
    # Batched (left-padded) and one-at-a-time agree.
    assert greedy == [generate(model, tok, [p], max_new_tokens=5, temperature=0.0)[0] for p in prompts]


def test_cached_hub_id_resolves_to_its_snapshot_and_adapters_record_it(monkeypatch, tmp_path):
    import json

    import huggingface_hub

    from feedalign.policies.export import base_of, record_base

    snapshot = tmp_path / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: str(snapshot / name) if repo == "org/cached" else None)
    assert hf._resolve_source("org/cached", "x") == str(snapshot)
    assert hf._resolve_source("org/other", "x") == "org/other"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "relative/base"}))
    info = record_base(adapter, "org/cached")
    assert info == {"path": str(snapshot), "hub_id": "org/cached"}
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/cached"
    assert base_of(adapter) == str(snapshot)
