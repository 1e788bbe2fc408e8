"""From feedback records to tokenised micro-batches, by the loss's feedback kind.

* ``pair``      PairRecords (or labeled records turned into discordant pairs); a batch of B
                pairs is ONE forward of 2B rows: the B chosen rows, then the B rejected rows.
* ``unpaired``  LabeledRecords (a PairRecord becomes a thumbs-up and a thumbs-down row); B rows.
* ``sequence``  positives only (thumbs-up completions, or the chosen side of pairs); B rows.

The sampler is a seeded permutation per epoch and source; its position is part of the
checkpoint, so a resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from feedalign.data.errors import FeedbackDataError
from feedalign.data.records import LabeledRecord, PairRecord

logger = logging.getLogger("feedalign.data")


@dataclass(frozen=True)
class Example:
    """One training example. ``completion`` is the chosen side for pairs; ``rejected`` is set
    only for pairs and ``label`` only for unpaired examples."""

    id: str
    prompt: str
    completion: str
    objective: str | None = None
    label: bool | None = None
    rejected: str | None = None
    where: str = ""
    weight: float = 1.0  # the record's weight divided by the source's mean weight (see weighted_mean)
    tie: bool = False  # pairs only: the two completions were judged equally good (tie-aware losses)
    tokens: dict[str, list[int]] | None = None
    rejected_tokens: dict[str, list[int]] | None = None
    # Steerable runs: the example's weight vector [m], its prompt before conditioning, and
    # the tokens of (plain prompt, completion / rejected) that the reference scores.
    steer_weights: tuple[float, ...] | None = None
    plain_prompt: str | None = None
    reference_tokens: dict[str, list[int]] | None = None
    reference_rejected_tokens: dict[str, list[int]] | None = None
    # The completion / rejected text was cut off: tokenised without EOS.
    truncated: bool = False
    rejected_truncated: bool = False


@dataclass
class Batch:
    """A collated micro-batch. Rows are examples, or chosen-then-rejected for pairs."""

    examples: list[Example]
    tensors: dict[str, torch.Tensor]  # input_ids, attention_mask, completion_mask [rows, T]
    row_ids: list[str]
    prompts: list[str]
    completions: list[str]
    lengths: torch.Tensor  # [rows] completion token counts
    labels: torch.Tensor | None = None  # [B] bool, unpaired only
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.examples)

    @property
    def ids(self) -> list[str]:
        return [ex.id for ex in self.examples]


def examples_from_records(
    records: Sequence[Any], feedback: str, *, source: str, pairing: str | None, seed: int
) -> list[Example]:
    """Turn records into examples for a loss taking ``feedback`` ("pair" | "unpaired" |
    "sequence"). Raises FeedbackDataError when the records cannot feed that loss."""
    pairs = [r for r in records if isinstance(r, PairRecord)]
    labeled = [r for r in records if isinstance(r, LabeledRecord)]
    other = [r for r in records if not isinstance(r, (PairRecord, LabeledRecord))]
    if other:
        first = other[0]
        raise FeedbackDataError(
            first.source or source,
            f"source '{source}' holds {type(first).__name__}s; the trainer takes pairs or labeled "
            "records (turn scores into labels or pairs first)",
        )
    return _normalise_weights(_examples(pairs, labeled, feedback, pairing=pairing, seed=seed, source=source))


def _examples(pairs, labeled, feedback: str, *, pairing: str | None, seed: int, source: str) -> list[Example]:
    if feedback == "pair":
        if labeled and pairing == "discordant":
            from feedalign.data.discordant import discordant_pairs

            pairs = pairs + list(discordant_pairs(labeled, seed=seed))
        elif labeled:
            raise FeedbackDataError(
                labeled[0].source or source,
                f"source '{source}' uses a pair loss but holds labeled records; set "
                "`pairing: discordant` to pair thumbs-up with thumbs-down answers to one prompt",
            )
        return [_pair_example(r) for r in pairs]
    if feedback == "unpaired":
        out = [_labeled_example(r) for r in labeled]
        if pairs:  # legitimate (KTO's paper does it), but said: the loss never sees the pairing
            logger.warning("source %s: %d pairs are split into %d thumbs-up (chosen) and thumbs-down (rejected) "
                           "examples for an unpaired loss", source, len(pairs), 2 * len(pairs))
        for r in pairs:
            out.append(Example(f"{r.id}/chosen", r.prompt, r.chosen, r.objective, True, where=r.source,
                               weight=r.weight, truncated=r.chosen_truncated))
            out.append(Example(f"{r.id}/rejected", r.prompt, r.rejected, r.objective, False, where=r.source,
                               weight=r.weight, truncated=r.rejected_truncated))
        return out
    if feedback == "sequence":
        dropped = len(pairs) + sum(1 for r in labeled if not r.label)
        if dropped:
            logger.warning("source %s: a sequence loss trains on desirable completions only; %d rejected "
                           "completions and thumbs-down rows are not used", source, dropped)
        out = [_labeled_example(r) for r in labeled if r.label]
        out += [Example(r.id, r.prompt, r.chosen, r.objective, where=r.source, weight=r.weight,
                        truncated=r.chosen_truncated) for r in pairs]
        return [replace(ex, label=None) for ex in out]
    raise ValueError(f"feedback kind {feedback!r} is not trained by the policy trainer")


def _pair_example(r: PairRecord) -> Example:
    return Example(r.id, r.prompt, r.chosen, r.objective, rejected=r.rejected, where=r.source, weight=r.weight,
                   tie=r.tie, truncated=r.chosen_truncated, rejected_truncated=r.rejected_truncated)


def _labeled_example(r: LabeledRecord) -> Example:
    return Example(r.id, r.prompt, r.completion, r.objective, label=bool(r.label), where=r.source, weight=r.weight,
                   truncated=r.truncated)


def _normalise_weights(examples: list[Example]) -> list[Example]:
    """Per-row weights divided by their mean over the source: the loss ``mean_i(w_i * l_i)``
    of any micro-batch then averages, over a pass, to the weighted mean sum(w l) / sum(w),
    whatever the micro-batch size (1x8 == 8x1)."""
    if all(ex.weight == 1.0 for ex in examples):
        return examples
    mean = sum(ex.weight for ex in examples) / len(examples)
    return [replace(ex, weight=ex.weight / mean) for ex in examples]


def weighted_mean(losses: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The batch objective: ``mean_i(w_i * loss_i)`` with the normalised example weights
    (the plain mean when every weight is 1)."""
    weights = batch.extras.get("example_weights")
    if weights is None:
        return losses.mean()
    return (losses * weights.to(device=losses.device, dtype=losses.dtype)).mean()


def steer_examples(examples: Sequence[Example], spec: Any) -> list[Example]:
    """Give every example its weight vector (a function of the spec's seed and the example's
    id only, so resuming, re-splitting or sharding never changes it) and prefix its prompt
    with that weight (``spec.condition_prompt``). Call before tokenising."""
    from feedalign.multiobjective.steering import condition_prompt

    ws = spec.weights_for([ex.id for ex in examples])
    return [
        replace(ex, prompt=condition_prompt(ex.prompt, w, spec), steer_weights=tuple(float(v) for v in w),
                plain_prompt=ex.prompt)
        for ex, w in zip(examples, ws)
    ]


def split_eval(
    examples: Sequence[Example], fraction: float, seed: int, *, stream: int = 0, min_eval: int = 1
) -> tuple[list[Example], list[Example]]:
    """Seeded held-out split: ``round(fraction * n)`` examples (at least ``min_eval`` when
    fraction > 0) go to evaluation; the training examples keep their original order.
    ``stream`` (the source index) gives each source its own random stream."""
    n = len(examples)
    if fraction <= 0 or n < 2:
        return list(examples), []
    n_eval = min(n - 1, max(min_eval, round(fraction * n)))
    perm = np.random.default_rng([seed, stream, 0x5EED]).permutation(n)
    held = set(perm[:n_eval].tolist())
    train = [ex for i, ex in enumerate(examples) if i not in held]
    evaluation = [examples[i] for i in sorted(held)]
    return train, evaluation


class EpochSampler:
    """Deterministic sampler over ``size`` examples: a fresh seeded permutation per epoch,
    consumed in order; a batch that runs past the end continues in the next epoch.

    With ``world`` processes every process advances through the same global batch of
    ``batch_size * world`` indices and keeps its own slice (rank-major), so the state is the
    same on every process.
    """

    def __init__(self, size: int, seed: int, *, stream: int = 0, rank: int = 0, world: int = 1) -> None:
        if size < 1:
            raise ValueError("EpochSampler needs at least one example")
        self.size, self.seed, self.stream, self.rank, self.world = size, seed, stream, rank, world
        self.epoch = 0
        self.position = 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.size)

    def next_indices(self, batch_size: int) -> list[int]:
        need = batch_size * self.world
        out: list[int] = []
        while len(out) < need:
            take = min(need - len(out), self.size - self.position)
            out.extend(self._perm[self.position : self.position + take].tolist())
            self.position += take
            if self.position == self.size:
                self.epoch += 1
                self.position = 0
                self._perm = self._permutation(self.epoch)
        return out[self.rank * batch_size : (self.rank + 1) * batch_size]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "size": self.size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["size"] != self.size:
            raise ValueError(
                f"checkpoint sampler covers {state['size']} examples but the data now has "
                f"{self.size}; resume needs the same data"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = self._permutation(self.epoch)


def collate(
    examples: Sequence[Example], feedback: str, pad_id: int, *, packing: bool = False, share_prompt: bool = False
) -> Batch:
    """Collate a micro-batch: pairs give 2B rows (chosen rows first, then rejected rows).
    Padded ``[rows, T]`` tensors, or with ``packing`` one padding-free row holding every
    row in that order (``data.collate.pack_examples``); pairs with ``packing`` and
    ``share_prompt`` run each prompt once (``data.shared_prompt``)."""
    from feedalign.data.collate import pack_examples, pad_batch
    from feedalign.data.shared_prompt import pack_rows

    examples = list(examples)
    prompts = [ex.prompt for ex in examples]
    if feedback == "pair":
        rows = [ex.tokens for ex in examples] + [ex.rejected_tokens for ex in examples]
        row_ids = [f"{ex.id}/chosen" for ex in examples] + [f"{ex.id}/rejected" for ex in examples]
        prompts = prompts + prompts
        completions = [ex.completion for ex in examples] + [ex.rejected for ex in examples]
    else:
        rows = [ex.tokens for ex in examples]
        row_ids = [ex.id for ex in examples]
        completions = [ex.completion for ex in examples]
    shared = packing and share_prompt and feedback == "pair"
    tensors = pack_rows(rows) if shared else pack_examples(rows) if packing else pad_batch(rows, pad_id)
    labels = None
    if feedback == "unpaired":
        labels = torch.tensor([bool(ex.label) for ex in examples], dtype=torch.bool)
    lengths = torch.tensor([sum(row["completion_mask"]) for row in rows], dtype=torch.long)
    extras: dict[str, Any] = {}
    if any(ex.weight != 1.0 for ex in examples):
        extras["example_weights"] = torch.tensor([ex.weight for ex in examples], dtype=torch.float32)
    if feedback == "pair":
        extras["ties"] = torch.tensor([ex.tie for ex in examples], dtype=torch.bool)
    if examples and all(ex.steer_weights is not None for ex in examples):
        extras["steer_weights"] = torch.tensor([ex.steer_weights for ex in examples], dtype=torch.float64)
        plain = [ex.plain_prompt for ex in examples]
        extras["plain_prompts"] = plain + plain if feedback == "pair" else plain
    if examples and all(ex.reference_tokens is not None for ex in examples):
        ref_rows = [ex.reference_tokens for ex in examples]
        if feedback == "pair":
            ref_rows += [ex.reference_rejected_tokens for ex in examples]
        extras["reference_tensors"] = (
            pack_rows(ref_rows) if shared else pack_examples(ref_rows) if packing else pad_batch(ref_rows, pad_id)
        )
    return Batch(examples, tensors, row_ids, prompts, completions, lengths, labels, extras)


def reference_tensors(batch: Batch) -> dict[str, Any]:
    """What the reference scores for ``batch``: the rows themselves, or for a steered source
    the same completions after the plain (unconditioned) prompts, since the reference
    policy never saw a steering prefix."""
    return batch.extras.get("reference_tensors", batch.tensors)


def collate_texts(
    tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], max_length: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Tokenise and pad arbitrary (prompt, completion) rows (e.g. KTO's mismatched pairs).
    The rows recombine texts that each fit, so the prompt may be cut to one token here
    (no minimum): such a row only estimates a reference point, it is not trained on."""
    from feedalign.data.collate import pad_batch, tokenize_example

    rows = [tokenize_example(tokenizer, p, c, max_length, min_prompt_length=0) for p, c in zip(prompts, completions)]
    return pad_batch(rows, pad_id)


def move_to(tensors: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors to ``device``; host values (a packed batch's ``max_seqlen``) unchanged."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}


def concat_rows(a: dict[str, Any], b: dict[str, Any], pad_id: int) -> dict[str, Any]:
    """Stack two batches of the same layout into one (rows of ``a`` first) so both go through
    ONE forward: right-padded batches are widened to the longer one (pad_id for input_ids, 0
    for the masks); packed rows are joined end to end."""
    if "shared_spans" in a or "shared_spans" in b:
        raise ValueError("concat_rows: a prompt-shared batch cannot be joined (set train.share_prompt: false)")
    if "segment_ids" in a:
        return _concat_packed(a, b)
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])

    def widen(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    out = {}
    for key in a:
        value = pad_id if key == "input_ids" else 0
        out[key] = torch.cat([widen(a[key], value), widen(b[key], value)])
    return out


def _concat_packed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if "segment_ids" not in b:
        raise ValueError("concat_rows: cannot join a packed batch with a padded one")
    out = {key: torch.cat([a[key], b[key]], dim=1) for key in ("input_ids", "position_ids", "completion_mask")}
    out["segment_ids"] = torch.cat([a["segment_ids"], b["segment_ids"] + a["seq_lens"].numel()], dim=1)
    out["seq_lens"] = torch.cat([a["seq_lens"], b["seq_lens"]])
    out["cu_seqlens"] = torch.cat([a["cu_seqlens"], b["cu_seqlens"][1:] + a["cu_seqlens"][-1]])
    out["max_seqlen"] = max(a["max_seqlen"], b["max_seqlen"])
    return out
