"""Samples of the reference policy for a loss's optional ``kl`` input (``data.N.kl_samples``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from feedalign.config.checks import CheckedSource
from feedalign.config.schema import TrainConfig
from feedalign.data.batching import EpochSampler, Example
from feedalign.data.tokenize import tokenize_examples
from feedalign.data.errors import FeedbackDataError
from feedalign.data.records import PairRecord
from feedalign.trainers.forward import KLSamples
from feedalign.trainers.source_data import tokenize_options_of

# Reference-sample samplers get random streams of their own, apart from the sources' (index).
_KL_STREAM = 0x4B4C0000


def kl_samples_of(
    item: CheckedSource, index: int, tokenizer: Any, train: TrainConfig, *, rank: int, world: int
) -> KLSamples | None:
    """The source's reference samples for its loss's ``kl`` input (None without kl_samples)."""
    if item.config.kl_samples is None:
        return None
    examples = load_kl_samples(item.config.kl_sample_paths)
    examples = tokenize_examples(examples, tokenizer, tokenize_options_of(item.config, train))
    sampler = EpochSampler(len(examples), train.seed, stream=_KL_STREAM + index, rank=rank, world=world)
    return KLSamples(examples, sampler, item.config.kl_batch_size or train.micro_batch_size, train.packing)


def load_kl_samples(paths: Sequence[str]) -> list[Example]:
    """Reference-policy samples from prompt/completion rows (any loader format; a pair row
    gives both completions). Labels and scores are ignored: every row is a sample."""
    from feedalign.data.errors import RowError
    from feedalign.data.loaders import open_source
    from feedalign.data.validation import row_to_records

    examples = []
    for path in paths:
        name, items = open_source(path)
        before = len(examples)
        for loc, row, problem in items:
            if problem is not None:
                raise problem.to_error()
            row = {k: v for k, v in row.items() if k not in ("label", "labels", "score", "scores")}
            try:
                records = row_to_records(row, kind=None if "chosen" in row else "positive")
            except RowError as exc:
                raise FeedbackDataError(str(loc), exc.reason, exc.field) from None
            for record in records:
                pair = isinstance(record, PairRecord)
                texts = (record.chosen, record.rejected) if pair else (record.completion,)
                for text in texts:
                    examples.append(Example(f"{len(examples)}", record.prompt, text, where=str(loc)))
        if len(examples) == before:
            raise FeedbackDataError(name, "no reference samples (expected prompt/completion rows)")
    return examples


def warn_in_batch_kl(item: CheckedSource, examples: Sequence[Example], prefix: str) -> None:
    """A loss with an optional ``kl`` input and no ``kl_samples`` estimates KL(pi_ref||pi_theta)
    on the batch's own samples: only right if they were drawn from pi_ref in their natural
    class proportions. A one-class set is not such a sample (ALGORITHMS.md §9)."""
    from feedalign.config.checks import takes_kl

    spec = item.spec
    if spec.feedback != "unpaired" or not takes_kl(spec) or spec.in_batch_kl_effect is None or not examples:
        return
    effect = spec.in_batch_kl_effect(frozenset(bool(ex.label) for ex in examples))
    if effect is None:
        return
    warnings.warn(
        f"{prefix} (source '{item.name}', loss '{item.spec.name}'): no kl_samples, so "
        f"KL(pi_ref || pi_theta) is estimated on the batch's own samples; {effect}. Set "
        f"{prefix}.kl_samples to a file of samples from the reference policy.",
        stacklevel=2,
    )
