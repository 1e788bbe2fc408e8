import pytest
import torch

from feedalign.data.collate import (
    block_causal_mask,
    bos_prefix,
    encode_prompt,
    pack_examples,
    pad_batch,
    tokenize_example,
    tokenize_rows,
)
from feedalign.policies.tiny import BOS_ID, EOS_ID, PAD_ID, build_char_tokenizer

ALPHABET = "abcdefghij "


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(ALPHABET)


def ids_of(text):
    # Tokens 0..3 are special; the alphabet follows in order.
    return [4 + ALPHABET.index(c) for c in text]


def test_boundary_is_exact_and_mask_covers_completion_and_eos(tok):
    ex = tokenize_example(tok, "abc", " de", 64)
    assert ex["input_ids"] == [BOS_ID] + ids_of("abc") + ids_of(" de") + [EOS_ID]
    assert ex["completion_mask"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert bos_prefix(tok) == [BOS_ID]
    assert encode_prompt(tok, "abc") == ex["input_ids"][:4]


def test_no_bos_tokenizer_and_empty_prompt():
    tok = build_char_tokenizer(ALPHABET, add_bos=False)
    assert bos_prefix(tok) == []
    ex = tokenize_example(tok, "a", "b", 8)
    assert ex == {"input_ids": ids_of("a") + ids_of("b") + [EOS_ID], "completion_mask": [0, 1, 1]}
    with pytest.raises(ValueError, match="ex-7.*prompt is empty"):
        tokenize_example(tok, "", "b", 8, example_id="ex-7")


def test_empty_prompt_with_bos_is_fine(tok):
    ex = tokenize_example(tok, "", "ab", 8)
    assert ex["input_ids"] == [BOS_ID] + ids_of("ab") + [EOS_ID]
    assert ex["completion_mask"] == [0, 1, 1, 1]


def test_truncation_cuts_prompt_from_left_down_to_the_minimum_then_completion(tok):
    # 1 bos + 6 prompt + 3 completion(+eos) = 10 tokens.
    ex = tokenize_example(tok, "abcdef", "gh", 7, min_prompt_length=2)
    assert ex["input_ids"] == [BOS_ID] + ids_of("def") + ids_of("gh") + [EOS_ID]
    assert ex["completion_mask"] == [0, 0, 0, 0, 1, 1, 1]
    # The prompt never goes below min_prompt_length: the completion loses its tail instead.
    ex = tokenize_example(tok, "abcdef", "ghij", 5, min_prompt_length=2)
    assert ex["input_ids"] == [BOS_ID] + ids_of("ef") + ids_of("gh")
    keep_start = tokenize_example(tok, "abcdef", "gh", 7, truncation="keep_start_of_prompt", min_prompt_length=2)
    assert keep_start["input_ids"] == [BOS_ID] + ids_of("abc") + ids_of("gh") + [EOS_ID]
    # Default minimum (8 tokens, or the whole prompt when shorter): no room left -> refused.
    with pytest.raises(ValueError, match="does not fit in max_length=7.*at least 6 tokens"):
        tokenize_example(tok, "abcdef", "gh", 7)


def test_max_prompt_length_cuts_the_prompt_first(tok):
    ex = tokenize_example(tok, "abcdef", "gh", 64, max_prompt_length=2)
    assert ex["input_ids"] == [BOS_ID] + ids_of("ef") + ids_of("gh") + [EOS_ID]
    with pytest.raises(ValueError, match="max_prompt_length=2"):
        tokenize_example(tok, "abcdef", "gh", 64, max_prompt_length=2, truncation="error")


def test_pair_shares_one_truncation_decision(tok):
    # chosen is short, rejected is long: both keep the SAME prompt tokens.
    (chosen, rejected), cut = tokenize_rows(tok, "abcdef", ["g", "ghijghij"], 10, min_prompt_length=2)
    assert cut
    prompt_len = [len(r["input_ids"]) - sum(r["completion_mask"]) for r in (chosen, rejected)]
    assert prompt_len[0] == prompt_len[1]
    assert chosen["input_ids"][: prompt_len[0]] == rejected["input_ids"][: prompt_len[0]]
    assert len(rejected["input_ids"]) <= 10 and rejected["input_ids"][-1] != EOS_ID  # cut from the right
    assert chosen["input_ids"][-1] == EOS_ID
    _, cut = tokenize_rows(tok, "ab", ["c", "d"], 64)
    assert not cut


def test_no_double_eos_and_truncated_completions_get_none(tok):
    eos_text = tok.eos_token
    ex = tokenize_example(tok, "ab", "cd" + eos_text, 64)
    assert ex["input_ids"] == [BOS_ID] + ids_of("ab") + ids_of("cd") + [EOS_ID]
    ex = tokenize_example(tok, "ab", "cd", 64, truncated=True)
    assert ex["input_ids"] == [BOS_ID] + ids_of("ab") + ids_of("cd")
    assert ex["completion_mask"] == [0, 0, 0, 1, 1]


def test_no_double_bos_when_the_prompt_text_starts_with_it(tok):
    ex = tokenize_example(tok, tok.bos_token + "ab", "c", 64)
    assert ex["input_ids"] == [BOS_ID] + ids_of("ab") + ids_of("c") + [EOS_ID]


class _NoEos:
    """A tokenizer view without an EOS token."""

    def __init__(self, tok):
        self._tok, self.bos_token_id, self.eos_token_id = tok, tok.bos_token_id, None

    def __call__(self, text, add_special_tokens=True):
        return self._tok(text, add_special_tokens=add_special_tokens)


def test_never_returns_empty_completion_and_names_example(tok):
    with pytest.raises(ValueError, match="'row-3'.*completion is empty"):
        tokenize_example(_NoEos(tok), "ab", "", 8, example_id="row-3")
    assert tokenize_example(_NoEos(tok), "ab", "c", 8)["completion_mask"] == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        tokenize_example(tok, "ab", "c", 1)
    # The tightest budget still keeps one context token and one completion token.
    assert tokenize_example(tok, "abcdef", "ghij", 2, min_prompt_length=0)["input_ids"] == [BOS_ID] + ids_of("g")


def test_truncation_without_bos_keeps_one_prompt_token():
    tok = build_char_tokenizer(ALPHABET, add_bos=False)
    ex = tokenize_example(tok, "abcdef", "gh", 3, min_prompt_length=0)
    assert ex["input_ids"] == ids_of("f") + ids_of("gh")
    assert ex["completion_mask"] == [0, 1, 1]
    ex = tokenize_example(tok, "abcdef", "gh", 2, min_prompt_length=0)
    assert ex["input_ids"] == ids_of("f") + ids_of("g")


def test_error_truncation_mode_and_bad_mode(tok):
    with pytest.raises(ValueError, match="exceed max_length=4"):
        tokenize_example(tok, "abcdef", "gh", 4, truncation="error")
    with pytest.raises(ValueError, match="truncation="):
        tokenize_example(tok, "a", "b", 4, truncation="middle")


def test_pad_batch_right_pads_and_rounds_up(tok):
    a = tokenize_example(tok, "ab", "c", 32)  # 5 tokens
    b = tokenize_example(tok, "a", "bcdef", 32)  # 8 tokens
    batch = pad_batch([a, b], PAD_ID, pad_to_multiple_of=4)
    assert batch["input_ids"].shape == (2, 8) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][0].tolist() == a["input_ids"] + [PAD_ID] * 3
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 8]
    assert batch["completion_mask"][0].tolist() == a["completion_mask"] + [0] * 3
    assert pad_batch([a], PAD_ID, pad_to_multiple_of=8)["input_ids"].shape == (1, 8)
    with pytest.raises(ValueError, match="position 0"):
        pad_batch([{"input_ids": [5, 6], "completion_mask": [1, 1]}], PAD_ID)
    with pytest.raises(ValueError, match="no examples"):
        pad_batch([], PAD_ID)


def test_pack_examples_layout(tok):
    exs = [tokenize_example(tok, "ab", "c", 32), tokenize_example(tok, "a", "bcd", 32), tokenize_example(tok, "", "e", 8)]
    packed = pack_examples(exs)
    lengths = [len(e["input_ids"]) for e in exs]  # 5, 6, 3
    assert packed["input_ids"][0].tolist() == sum((e["input_ids"] for e in exs), [])
    assert packed["completion_mask"][0].tolist() == sum((e["completion_mask"] for e in exs), [])
    assert packed["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0, 1, 2]
    assert packed["segment_ids"][0].tolist() == [0] * 5 + [1] * 6 + [2] * 3
    assert packed["seq_lens"].tolist() == lengths
    assert packed["cu_seqlens"].tolist() == [0, 5, 11, 14] and packed["cu_seqlens"].dtype == torch.int32


def test_block_causal_mask():
    seg = torch.tensor([[0, 0, 1, 1, 1]])
    mask = block_causal_mask(seg)
    assert mask.shape == (1, 1, 5, 5)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(mask[0, 0], expected)
    additive = block_causal_mask(seg, dtype=torch.float32)[0, 0]
    assert torch.all(additive[expected] == 0) and torch.all(additive[~expected] == torch.finfo(torch.float32).min)
