"""The N-grams benchmark's "user's choice" feedback: weighted BT choices under the user's tag."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from feedalign.bench.ngrams import prior_sequences
from feedalign.bench.ngrams_choice import choice_pairs, choice_spec, tagged_prior
from feedalign.envs.ngrams import ngram_task


def test_choices_follow_the_users_weights():
    task = ngram_task(2)
    spec = choice_spec(task.objectives, 10, seed=0)
    pool = prior_sequences(task, 200, 0.8, seed=1)
    records = choice_pairs(task, spec, ">", pool, n_pairs=100, draws=3, temperature=1e-4, seed=2)
    assert len(records) == 300
    assert len({r.id for r in records}) == len(records)
    for r in records:
        w, plain = spec.parse_prompt(r.prompt)
        assert plain == ">" and w is not None and r.prompt.startswith("> <w:")  # the tag is last
        gain = w @ (task.score(r.chosen) - task.score(r.rejected))
        assert gain >= -1e-12  # near-deterministic user: never picks the worse one for its w
    # the same pair gets opposite labels from users with different weights
    by_pair = {}
    for r in records:
        by_pair.setdefault(frozenset((r.chosen, r.rejected)), set()).add(r.chosen)
    flips = sum(len(chosen) == 2 for chosen in by_pair.values())
    assert flips > 5


def test_choice_temperature_makes_labels_noisy():
    task = ngram_task(2)
    spec = choice_spec(task.objectives, 10, seed=0)
    pool = prior_sequences(task, 400, 0.8, seed=1)
    noisy = choice_pairs(task, spec, ">", pool, n_pairs=200, draws=1, temperature=10.0, seed=2)
    wrong = np.mean([spec.parse_prompt(r.prompt)[0] @ (task.score(r.chosen) - task.score(r.rejected)) < 0
                     for r in noisy])
    assert 0.3 < wrong < 0.6  # at T = 10 a 1/18 gain is a coin flip


def test_tagged_prior_spreads_tags_over_the_simplex():
    task = ngram_task(3)
    spec = choice_spec(task.objectives, 10, seed=0)
    seqs = prior_sequences(task, 300, 0.8, seed=1)
    records = tagged_prior(spec, ">", seqs, seed=4)
    assert [r.completion for r in records] == seqs and all(r.label for r in records)
    tags = Counter(tuple(spec.parse_prompt(r.prompt)[0]) for r in records)
    assert len(tags) > 30  # 66 grid weights


def test_conflict_pairs_disagree_on_the_objectives():
    task = ngram_task(3)
    spec = choice_spec(task.objectives, 10, seed=0)
    pool = prior_sequences(task, 300, 0.8, seed=1)
    records = choice_pairs(task, spec, ">", pool, n_pairs=80, draws=1, temperature=0.05, seed=2, conflict=True)
    for r in records:
        diff = task.score(r.chosen) - task.score(r.rejected)
        assert diff.max() > 0 > diff.min()
    with pytest.raises(ValueError, match="conflicting"):
        choice_pairs(task, spec, ">", ["AV" * 16, "AV" * 16 + "A"], n_pairs=1, draws=1, temperature=0.05, seed=0,
                     conflict=True)
