"""Items files and items sampled from a model."""

import json

import pytest

from feedalign.serve.items import read_prompts, sample_items
from feedalign.serve.validation import read_items


def test_read_items_layouts_and_errors(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"prompt": "q", "completions": ["a", "b"], "round": 2}) + "\n\n"
                    + json.dumps({"id": 7, "prompt": "r", "completion": "c"}) + "\n")
    pair, single = read_items(path)
    assert pair.is_pair and pair.round == 2 and pair.source.endswith("items.jsonl:1")
    assert not single.is_pair and single.id == "7"
    for row, message in [({"prompt": "", "completion": "c"}, ":1: field 'prompt'"),
                         ({"prompt": "q"}, ":1: field 'completion'"),
                         ({"prompt": "q", "completions": ["a", "a"]}, "identical"),
                         ({"prompt": "q", "completion": "c", "round": -1}, "field 'round'")]:
        path.write_text(json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=message):
            read_items(path)
    path.write_text(json.dumps({"id": "x", "prompt": "q", "completion": "a"}) + "\n"
                    + json.dumps({"id": "x", "prompt": "q", "completion": "b"}) + "\n")
    with pytest.raises(ValueError, match=":2: field 'id'"):
        read_items(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=":1: invalid JSON"):
        read_items(path)


def test_items_sampled_from_a_model(tmp_path):
    from feedalign.envs.text_task import TextTask, build_tiny_llama, build_tokenizer

    tokenizer = build_tokenizer()
    build_tiny_llama(tokenizer, seed=0).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    prompts_file = tmp_path / "prompts.jsonl"
    prompts = TextTask(seed=0).prompts(4, "train")
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    assert read_prompts(prompts_file) == prompts
    items = sample_items(str(tmp_path / "m"), prompts, max_new_tokens=6, seed=0, round=3)
    again = sample_items(str(tmp_path / "m"), prompts, max_new_tokens=6, seed=0, round=3)
    assert [i.id for i in items] == [i.id for i in again]  # seeded: the same items
    assert items and all(i.prompt in prompts and i.round == 3 for i in items)
    assert all(i.completion_a != i.completion_b for i in items if i.is_pair)
