"""Sampling the current policy for feedback: the prompt as the model sees it, K completions.

With ``chat_template: auto`` a user prompt is rendered with the tokenizer's chat template
(``apply_chat_template(..., add_generation_prompt=True)``) when the tokenizer has one, and
used as plain text otherwise (the text task's word-level tokenizer has none). The rendered
text is what the feedback files store as ``prompt``, so training sees exactly the text the
completions were sampled after; the user's prompt is kept as ``raw_prompt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CHAT_TEMPLATE_MODES = ("auto", "none")


def render_prompt(tokenizer: Any, prompt: str, mode: str = "auto") -> str:
    if mode not in CHAT_TEMPLATE_MODES:
        raise ValueError(f"chat_template must be one of {CHAT_TEMPLATE_MODES}, got {mode!r}")
    if mode == "auto" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


def sample_completions(model: Any, tokenizer: Any, prompts: Sequence[str], k: int, *, max_new_tokens: int,
                       temperature: float, seed: int, batch_size: int) -> list[list[str]]:
    """``k`` completions for each (already rendered) prompt: ``out[i][j]``."""
    from feedalign.policies.hf import generate

    flat_prompts = [p for p in prompts for _ in range(k)]
    flat = generate(model, tokenizer, flat_prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                    seed=seed, batch_size=batch_size)
    return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]
