"""Records -> examples by feedback kind, the deterministic sampler, eval split, collation."""

from __future__ import annotations

import pytest
import torch

from feedalign.data.errors import FeedbackDataError
from feedalign.data.records import LabeledRecord, PairRecord, ScoredRecord
from feedalign.data.batching import (
    EpochSampler,
    Example,
    collate,
    examples_from_records,
    split_eval,
)
from feedalign.data.tokenize import tokenize_examples

PAIRS = [PairRecord("p1", "good", "bad", objective="helpful", id="a"), PairRecord("p2", "yes", "no", id="b")]
THUMBS = [LabeledRecord("q", "up", True, id="u"), LabeledRecord("q", "down", False, id="d")]


def test_pairs_become_two_labeled_rows_for_unpaired_losses():
    examples = examples_from_records(PAIRS, "unpaired", source="s", pairing=None, seed=0)
    assert [(e.id, e.completion, e.label) for e in examples] == [
        ("a/chosen", "good", True),
        ("a/rejected", "bad", False),
        ("b/chosen", "yes", True),
        ("b/rejected", "no", False),
    ]
    assert examples[0].objective == "helpful"


def test_sequence_losses_take_positives_and_chosen_sides():
    examples = examples_from_records(THUMBS + PAIRS, "sequence", source="s", pairing=None, seed=0)
    assert [(e.id, e.completion) for e in examples] == [("u", "up"), ("a", "good"), ("b", "yes")]
    assert all(e.label is None for e in examples)


def test_pair_losses_need_pairs_or_discordant_pairing():
    with pytest.raises(FeedbackDataError, match="pairing: discordant"):
        examples_from_records(THUMBS, "pair", source="s", pairing=None, seed=0)
    examples = examples_from_records(THUMBS, "pair", source="s", pairing="discordant", seed=0)
    assert [(e.prompt, e.completion, e.rejected) for e in examples] == [("q", "up", "down")]
    with pytest.raises(FeedbackDataError, match="ScoredRecord"):
        examples_from_records([ScoredRecord("p", "c", {"x": 1.0})], "pair", source="s", pairing=None, seed=0)


@pytest.mark.parametrize("world", [1, 2])
def test_sampler_covers_each_epoch_and_resumes_exactly(world):
    size, batch = 10, 3
    samplers = [EpochSampler(size, seed=7, stream=1, rank=r, world=world) for r in range(world)]
    seen = []
    for _ in range(10):
        seen.extend(i for s in samplers for i in s.next_indices(batch))
    per_epoch = [sorted(seen[k : k + size]) for k in range(0, 3 * size, size)]
    assert all(epoch == list(range(size)) for epoch in per_epoch)
    assert per_epoch and seen[:size] != seen[size : 2 * size]  # a new permutation per epoch
    # Resume: a fresh sampler loaded with the state continues with the same indices.
    state = samplers[0].state_dict()
    clone = EpochSampler(size, seed=7, stream=1, rank=0, world=world)
    clone.load_state_dict(state)
    assert [clone.next_indices(batch) for _ in range(5)] == [
        samplers[0].next_indices(batch) for _ in range(5)
    ]
    with pytest.raises(ValueError, match="same data"):
        EpochSampler(size + 1, seed=7).load_state_dict(state)


def test_streams_and_seeds_give_different_orders():
    a = EpochSampler(20, seed=0, stream=0).next_indices(20)
    assert a != EpochSampler(20, seed=0, stream=1).next_indices(20)
    assert a != EpochSampler(20, seed=1, stream=0).next_indices(20)
    assert a == EpochSampler(20, seed=0, stream=0).next_indices(20)


def test_split_eval_is_seeded_disjoint_and_sized():
    examples = [Example(str(i), "p", "c") for i in range(20)]
    train, held = split_eval(examples, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert {e.id for e in train}.isdisjoint({e.id for e in held})
    assert [e.id for e in train] == sorted((e.id for e in train), key=int)  # original order kept
    assert split_eval(examples, 0.25, seed=3) == (train, held)
    assert split_eval(examples, 0.25, seed=4) != (train, held)
    assert split_eval(examples, 0.0, seed=3) == (examples, [])
    assert len(split_eval(examples[:4], 0.1, seed=0, min_eval=2)[1]) == 2


def test_collate_pairs_chosen_rows_then_rejected_rows():
    from feedalign.policies.tiny import build_char_tokenizer

    tok = build_char_tokenizer("abcdefghijklmnopqrstuvwxyz12 ")
    examples = tokenize_examples(
        examples_from_records(PAIRS, "pair", source="s", pairing=None, seed=0), tok, 32
    )
    batch = collate(examples, "pair", tok.pad_token_id)
    assert batch.tensors["input_ids"].shape[0] == 4
    assert batch.row_ids == ["a/chosen", "b/chosen", "a/rejected", "b/rejected"]
    assert batch.completions == ["good", "yes", "bad", "no"]
    assert batch.prompts == ["p1", "p2", "p1", "p2"]
    # completion tokens + EOS per row
    assert batch.lengths.tolist() == [5, 4, 4, 3]
    unpaired = collate(
        tokenize_examples(
            examples_from_records(THUMBS, "unpaired", source="s", pairing=None, seed=0), tok, 32
        ),
        "unpaired",
        0,
    )
    assert torch.equal(unpaired.labels, torch.tensor([True, False]))
