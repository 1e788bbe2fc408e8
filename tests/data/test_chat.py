"""Conversations rendered with the tokenizer's own chat template (data.chat + batching)."""

import warnings

import pytest

from feedalign.data.batching import examples_from_records
from feedalign.data.tokenize import TokenizeOptions, tokenize_source
from feedalign.data.chat import end_of_turn_ids, render_turn
from feedalign.data.loaders import load_records
from feedalign.policies.tiny import EOS_ID, build_chat_tokenizer

MESSAGES = [
    {"role": "system", "content": "answer in one word"},
    {"role": "user", "content": "capital of france?"},
    {"role": "assistant", "content": "paris."},
]


@pytest.fixture(scope="module")
def tok():
    return build_chat_tokenizer()


def _examples(rows, feedback="unpaired"):
    records = load_records(rows).records
    return examples_from_records(records, feedback, source="s", pairing=None, seed=0)


def _tokenize(tok, rows, feedback="unpaired", **options):
    return tokenize_source(_examples(rows, feedback), tok, TokenizeOptions(**options))


def _encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("messages", [MESSAGES, MESSAGES[1:]], ids=["system", "default-system"])
def test_prompt_and_completion_are_the_template_rendering(tok, messages):
    result = _tokenize(tok, [{"messages": messages, "label": True}])
    (ex,) = result.examples
    expected_prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(messages, tokenize=False)
    assert ex.prompt == expected_prompt
    assert ex.prompt + ex.completion == full
    full_ids = _encode(tok, full)
    n_prompt = len(_encode(tok, expected_prompt))
    assert ex.tokens["input_ids"] == full_ids  # token-identical, no EOS after <|im_end|>\n
    assert ex.tokens["completion_mask"] == [0] * n_prompt + [1] * (len(full_ids) - n_prompt)
    assert EOS_ID not in ex.tokens["input_ids"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert ex.tokens["input_ids"][-2:] == [im_end, _encode(tok, "\n")[0]]


def test_end_of_turn_token_is_found_from_the_template(tok):
    assert end_of_turn_ids(tok) == [EOS_ID, tok.convert_tokens_to_ids("<|im_end|>")]


def test_pairs_share_the_rendered_prompt(tok):
    row = {"prompt": MESSAGES[:2], "chosen": [{"role": "assistant", "content": "paris."}],
           "rejected": [{"role": "assistant", "content": "rome."}]}
    (ex,) = _tokenize(tok, [row], feedback="pair").examples
    n = len(_encode(tok, ex.prompt))
    assert ex.tokens["input_ids"][:n] == ex.rejected_tokens["input_ids"][:n]
    assert ex.rejected == "rome.<|im_end|>\n"


def test_plain_strings_stay_plain_unless_chat_template_true(tok):
    row = {"prompt": "capital of france?", "completion": "paris.", "label": True}
    (plain,) = _tokenize(tok, [row]).examples
    assert plain.prompt == "capital of france?"
    assert plain.tokens["input_ids"][-1] == EOS_ID  # no template: EOS ends the completion
    (wrapped,) = _tokenize(tok, [row], chat_template=True).examples
    assert wrapped.prompt == tok.apply_chat_template(
        [{"role": "user", "content": "capital of france?"}], add_generation_prompt=True, tokenize=False)
    assert wrapped.completion == "paris.<|im_end|>\n"
    (fixed,) = _tokenize(tok, [{"messages": MESSAGES, "label": True}], chat_template=False).examples
    assert fixed.prompt.startswith("<|system|>\n")


def test_tokenizer_without_template_falls_back_and_warns_once():
    tok = build_chat_tokenizer(template=None)
    rows = [{"messages": MESSAGES, "label": True}, {"messages": MESSAGES[1:], "label": False}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _tokenize(tok, rows)
    assert [str(w.message) for w in caught if "no chat template" in str(w.message)].__len__() == 1
    assert result.examples[0].prompt.endswith("<|assistant|>\n")


def test_truncated_reply_has_no_end_of_turn(tok):
    _, completion = render_turn(tok, MESSAGES[:2], MESSAGES[2:], truncated=True)
    assert completion == "paris."


def test_rows_that_cannot_fit_are_rejected_with_a_reason(tok):
    rows = [{"messages": MESSAGES, "label": True}]
    result = _tokenize(tok, rows, max_length=20, min_prompt_length=20)
    assert not result.examples and "does not fit in max_length=20" in result.rejected[0][1]
    fits = _tokenize(tok, rows, max_length=60, min_prompt_length=8)
    assert fits.truncated == 1 and len(fits.examples[0].tokens["input_ids"]) <= 60


def test_truncated_field_in_the_data_means_no_end_of_turn_and_no_eos(tok):
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    rows = [{"messages": MESSAGES, "label": True, "truncated": True},
            {"prompt": "q?", "completion": "a long answer", "label": False, "truncated": True}]
    chat, plain = _tokenize(tok, rows).examples
    assert chat.completion == "paris." and im_end not in chat.tokens["input_ids"][-3:]
    assert plain.tokens["input_ids"][-1] != EOS_ID
    pair = {"prompt": "q?", "chosen": "yes", "rejected": "no no no", "rejected_truncated": True}
    (ex,) = _tokenize(tok, [pair], feedback="pair").examples
    assert ex.tokens["input_ids"][-1] == EOS_ID and ex.rejected_tokens["input_ids"][-1] != EOS_ID
    with pytest.raises(Exception, match="truncated.*true or false"):
        load_records([{"prompt": "q", "completion": "a", "label": True, "truncated": "yes"}])
