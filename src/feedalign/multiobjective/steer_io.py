"""A steerable model's ``steering.json`` and sampling it at a weight (re-exported by
:mod:`feedalign.multiobjective.steering`)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedalign.multiobjective.steering import SPEC_FILE, SteeringSpec


def save_spec(spec: SteeringSpec, directory: str | os.PathLike[str]) -> Path:
    """Write ``steering.json`` next to a steerable model."""
    path = Path(directory) / SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def load_spec(directory_or_file: str | os.PathLike[str]) -> SteeringSpec:
    """Read ``steering.json`` (a model directory or the file itself)."""
    path = Path(directory_or_file)
    path = path / SPEC_FILE if path.is_dir() else path
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; a steerable model directory holds {SPEC_FILE}") from None
    if raw.pop("format", None) != "feedalign.steering":
        raise ValueError(f"{path}: field 'format' must be 'feedalign.steering'")
    raw.pop("version", None)
    names = {f.name for f in dataclasses.fields(SteeringSpec)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{path}: unknown fields {unknown}; valid: {sorted(names)}")
    return SteeringSpec(**raw)


def generate_steered(model: Any, tokenizer: Any, spec: SteeringSpec, prompts: Sequence[Any], w: Any, *,
                     chat: bool = False, **kwargs: Any) -> list[str]:
    """Sample completions of ``prompts`` conditioned on weight ``w`` (snapped to the grid).

    Rendered as in training: a message list gets the tag in its turn (``placement``) and is
    rendered with the tokenizer's chat template; a string prompt is conditioned as it is, or,
    with ``chat`` (sources with ``chat_template: true``), as one user message of the template."""
    from feedalign.data.chat import render_prompt
    from feedalign.policies.hf import generate

    texts = []
    for p in prompts:
        if isinstance(p, str) and not chat:
            texts.append(spec.condition_prompt(p, w))
            continue
        messages = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        texts.append(render_prompt(tokenizer, spec.condition_prompt(messages, w)))
    return generate(model, tokenizer, texts, **kwargs)
