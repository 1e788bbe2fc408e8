"""Items to rate sampled from a model: two completions per prompt (an A/B comparison).

Prompts come from a JSONL file of ``{"prompt": str}`` rows (other columns ignored) or a
plain-text file with one prompt per line; errors name the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path

from feedalign.serve.storage import Item
from feedalign.serve.validation import item_id


def read_prompts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if path.suffix in (".jsonl", ".json", ".ndjson"):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
                prompt = row.get("prompt") if isinstance(row, dict) else None
                if not isinstance(prompt, str) or not prompt.strip():
                    raise ValueError(f"{path}:{lineno}: field 'prompt': expected a non-empty string")
            else:
                prompt = line.rstrip("\n")
            prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{path}: empty: no prompts found")
    return prompts


def sample_items(model_dir: str, prompts: list[str], *, max_new_tokens: int = 64, temperature: float = 1.0,
                 seed: int = 0, chat_template: str = "auto", round: int | None = None) -> list[Item]:
    """Two sampled completions per prompt; prompts whose two samples are identical or empty
    get a single-completion (thumbs) item instead, so every prompt is shown."""
    from feedalign.loop.sampling import render_prompt, sample_completions
    from feedalign.policies.hf import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, dtype="float32")
    rendered = [render_prompt(tokenizer, p, chat_template) for p in prompts]
    samples = sample_completions(model, tokenizer, rendered, 2, max_new_tokens=max_new_tokens,
                                 temperature=temperature, seed=seed, batch_size=16)
    items = []
    for index, (prompt, (a, b)) in enumerate(zip(rendered, samples)):
        texts = [t for t in (a, b) if t.strip()]
        texts = list(dict.fromkeys(texts))
        if not texts:
            continue  # both samples empty: nothing to show; counted by the caller
        source = f"{model_dir}:prompt {index}"
        items.append(Item(item_id(prompt, texts), prompt, texts[0], texts[1] if len(texts) == 2 else None,
                          source=source, round=round))
    return items
