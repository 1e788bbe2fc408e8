"""`feedalign data preview`: the rendered prompt equals the tokenizer's chat template and
the completion tokens are the rest of the whole conversation's tokens."""

import json

from feedalign.cli.main import main
from feedalign.policies.tiny import build_chat_tokenizer

MESSAGES = [
    {"role": "system", "content": "answer in one word"},
    {"role": "user", "content": "capital of france?"},
    {"role": "assistant", "content": "paris."},
]


def _files(tmp_path):
    tok = build_chat_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    rows = [{"id": "m1", "messages": MESSAGES, "label": True},
            {"id": "p1", "prompt": "hi?", "chosen": "yes.", "rejected": "no, no, no."}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tok, data


def test_preview_json_matches_the_chat_template(tmp_path, capsys):
    tok, data = _files(tmp_path)
    assert main(["data", "preview", str(data), "--model", str(tmp_path / "tok"), "--json", "--rows", "0"]) == 0
    chat, pair = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert chat["prompt_text"] == tok.apply_chat_template(MESSAGES[:-1], add_generation_prompt=True, tokenize=False)
    full = tok(tok.apply_chat_template(MESSAGES, tokenize=False), add_special_tokens=False)["input_ids"]
    (completion,) = chat["completions"]
    assert completion["name"] == "completion" and chat["prompt_tokens"] + completion["tokens"] == full
    assert chat["kind"] == "positive" and chat["truncated"] is False
    assert [c["name"] for c in pair["completions"]] == ["chosen", "rejected"]
    assert pair["prompt_text"] == "hi?"  # plain strings stay plain


def test_preview_readable_view_marks_the_boundary_and_truncation(tmp_path, capsys):
    _, data = _files(tmp_path)
    args = ["data", "preview", str(data), "--model", str(tmp_path / "tok"), "--max-length", "40",
            "--min-prompt-length", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "=== m1 (positive, label True)" in out and "[truncated]" in out and "\u2502paris." in out
    assert main(["data", "preview", str(tmp_path / "missing.jsonl"), "--model", str(tmp_path / "tok")]) == 2
    assert "error:" in capsys.readouterr().err
