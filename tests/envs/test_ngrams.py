"""N-grams task: scoring, and the DP's exact front against brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from feedalign.envs.ngrams import (
    PROTEIN_ALPHABET,
    NGramTask,
    diversity,
    edit_distance,
    exact_front_counts,
    ngram_task,
    tilted_samples,
)
from feedalign.evaluation.pareto import nondominated


def brute_front(task: NGramTask) -> np.ndarray:
    counts = [task.counts("".join(seq)) for n in range(task.min_length, task.max_length + 1)
              for seq in itertools.product(task.alphabet, repeat=n)]
    front = nondominated(np.unique(np.array(counts, dtype=np.float64), axis=0))
    return front[np.lexsort(front.T[::-1])]


def test_counts_are_overlapping_occurrences():
    task = NGramTask(("AV", "VC", "CA", "AA"), 1, 40, 18.0)
    assert task.counts("AVCAVCA").tolist() == [2, 2, 2, 0]
    assert task.counts("AAAA").tolist() == [0, 0, 0, 3]  # overlapping
    assert task.counts("").tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(task.score("AVAV"), [2 / 18, 0, 0, 0])


def test_invalid_sequences_are_named_or_scored_invalid():
    task = ngram_task(2)
    with pytest.raises(ValueError, match="length 3 outside"):
        task.score("AVC")
    with pytest.raises(ValueError, match=r"letters \['B'\]"):
        task.score("B" * 32)
    out = task.score_many(["AV" * 16, "AVC"])
    np.testing.assert_allclose(out, [[16 / 18, 0], [0, 0]])
    with pytest.raises(ValueError, match="sequence 1"):
        task.score_many(["AV" * 16, "AVC"], invalid=None)


@pytest.mark.parametrize(
    "grams,alphabet,lengths",
    [
        (("AV", "VC"), "AVCD", (2, 7)),
        (("AV", "VC", "CA"), "AVCD", (3, 7)),
        (("AV", "VC", "CA", "AB"), "AVCBD", (4, 6)),
        (("A", "V", "C"), "AVCW", (4, 6)),
        (("AVA", "VC"), "AVCD", (1, 7)),  # overlapping trigram, suffix of 2 letters
        (("AV", "VC"), PROTEIN_ALPHABET, (1, 3)),  # the real 20 letters
    ],
)
def test_dp_front_equals_brute_force(grams, alphabet, lengths):
    task = NGramTask(grams, lengths[0], lengths[1], 1.0, alphabet)
    counts, witnesses = exact_front_counts(task)
    np.testing.assert_array_equal(counts, brute_front(task))
    for point, seq in zip(counts, witnesses):
        assert task.invalid_reason(seq) is None
        np.testing.assert_array_equal(task.counts(seq), point)


def test_paper_variants_fronts():
    two = ngram_task(2)
    front = two.exact_front()
    # AV and VC share the V: "AVC" repeated gives 12 of each in 36 letters; every front point
    # has at most 18 occurrences of one bigram, and the extreme points are (1, 0) and (0, 1).
    assert {tuple(p) for p in front[[0, -1]]} == {(0.0, 1.0), (1.0, 0.0)}
    assert np.all(front <= 1.0) and nondominated(front).shape == front.shape
    assert [12 / 18, 12 / 18] in front.tolist()
    assert 0 < two.exact_hypervolume() < 1
    four = ngram_task(4)
    assert "B" in four.alphabet and four.exact_front().shape[1] == 4
    uni = ngram_task(2, "unigram")
    # unigrams share nothing: the front is a + v = 18 (lengths up to 18), a = 0..18.
    np.testing.assert_allclose(uni.exact_front().sum(1), 1.0)
    assert uni.exact_front().shape == (19, 2)


def test_variant_arguments_are_checked():
    with pytest.raises(ValueError, match="2, 3 or 4"):
        ngram_task(5)
    with pytest.raises(ValueError, match="kind"):
        ngram_task(2, "trigram")
    with pytest.raises(ValueError, match="distinct"):
        NGramTask(("AV", "AV"), 1, 2, 1.0)


def test_edit_distance_and_diversity():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    d = diversity(["AAA", "AAA", "AAV"])
    assert d["distinct"] == pytest.approx(2 / 3)
    assert d["mean_edit_distance"] == pytest.approx(2 / 3)


def test_tilted_samples_match_the_enumerated_distribution():
    task = NGramTask(("AV", "V"), 2, 3, 1.0, "AVC")
    probs, lam, w = np.array([0.5, 0.3, 0.2]), 0.7, np.array([0.6, 0.4])
    seqs = ["".join(s) for n in (2, 3) for s in itertools.product("AVC", repeat=n)]
    # uniform length, iid letters, times exp(lam * w . counts)
    weight = np.array([np.prod([probs["AVC".index(c)] for c in s]) * np.exp(lam * w @ task.counts(s)) / 2
                       for s in seqs])
    exact = weight / weight.sum()
    draws = tilted_samples(task, probs, lam, w, 20000, seed=1)
    freq = np.array([draws.count(s) for s in seqs]) / len(draws)
    np.testing.assert_allclose(freq, exact, atol=4 * np.sqrt(exact.max() / len(draws)))
    # lam = 0 is the prior; a large lam at low temperature concentrates on the best sequence
    letters = "".join(tilted_samples(task, probs, 0.0, w, 3000, seed=2))
    np.testing.assert_allclose([letters.count(c) / len(letters) for c in "AVC"], probs, atol=0.02)
    best = tilted_samples(ngram_task(2), np.full(20, 0.05), 12.0, [1.0, 0.0], 20, temperature=0.25)
    assert all(ngram_task(2).counts(s)[0] >= 16 for s in best)
    with pytest.raises(ValueError, match="letter_probs"):
        tilted_samples(task, [0.5, 0.5], lam, w, 1)
