"""Several weight draws per training pair for a steerable run (``steer.draws``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from feedalign.multiobjective.steering import SteeringSpec


def redraw_examples(examples: Sequence[Any], spec: SteeringSpec, tokenizer: Any, max_length: Any) -> list[Any]:
    """Training examples under ``spec.draws`` weights each: the given (draw 0) examples, then
    for every draw ``d = 1 .. draws - 1`` a copy conditioned on the weight of (seed, d, id),
    re-tokenised. Ids are kept (the reference scores the plain prompt, so a cached reference
    entry serves every draw); apply to the training split only, after the evaluation split, so
    that no pair is both trained and held out. Examples need ``plain_prompt`` (steered)."""
    if spec.draws == 1 or not examples:
        return list(examples)
    from feedalign.data.tokenize import tokenize_examples

    missing = [ex.id for ex in examples if ex.plain_prompt is None or ex.steer_weights is None]
    if missing:
        raise ValueError(f"redraw_examples: examples {missing[:3]} are not steered (call steer_examples first)")
    out = list(examples)
    for draw in range(1, spec.draws):
        ws = spec.weights_for([ex.id for ex in examples], draw)
        fresh = [dataclasses.replace(ex, prompt=spec.condition_prompt(ex.plain_prompt, w), tokens=None,
                                     rejected_tokens=None, reference_tokens=None, reference_rejected_tokens=None,
                                     steer_weights=tuple(float(v) for v in w))
                 for ex, w in zip(examples, ws)]
        out.extend(tokenize_examples(fresh, tokenizer, max_length))
    return out
