"""Programmatic judges for the real-model example: "mentions the right fact" and "concise"."""

from __future__ import annotations

import re

from questions import questions

CONCISE_WORDS = 20  # at most this many words, and not cut off at the sampling limit
_FACTS = dict(questions())


def mentions_fact(text: str, aliases: tuple[str, ...]) -> bool:
    low = text.lower()
    return any(re.search(r"(?<![a-z0-9])" + re.escape(a.lower()) + r"(?![a-z0-9])", low) for a in aliases)


def concise(text: str, truncated: bool = False) -> bool:
    return not truncated and 0 < len(text.split()) <= CONCISE_WORDS


def question_of(prompt: str) -> str | None:
    """The question inside a prompt (raw or rendered with a chat template)."""
    for q in _FACTS:
        if q in prompt:
            return q
    return None


def good_answer(prompts: list[str], completions: list[str]) -> list[float]:
    """1.0 for a concise answer that mentions the fact; usable as a training-time judge
    (``train.eval_judge: judge:good_answer`` with this directory on PYTHONPATH)."""
    out = []
    for prompt, text in zip(prompts, completions):
        q = question_of(prompt)
        out.append(float(q is not None and mentions_fact(text, _FACTS[q]) and concise(text)))
    return out
