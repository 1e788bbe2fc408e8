"""Discordant pairing: mechanics, and ALGORITHMS.md §14's claim that the order of a discordant
pair follows Bradley-Terry on the true reward whatever the labeling threshold c."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from feedalign.data import LabeledRecord, PairRecord, discordant_pairs, stable_id

REWARDS = np.array([0.0, 1.0, -0.7, 2.2])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _labeled(prompt, completion, label, objective=None, n=0):
    return LabeledRecord(
        prompt, completion, label, objective, id=f"{prompt}-{completion}-{label}-{n}", source=f"f:{n}"
    )


def test_pairs_up_with_down_within_prompt_and_objective_each_record_once():
    records = [
        _labeled("p", "a", True, n=1),
        _labeled("p", "b", False, n=2),
        _labeled("p", "c", True, n=3),
        _labeled("p", "d", False, n=4),
        _labeled("p", "e", False, n=5),
        _labeled("p", "a", True, "helpful", n=6),  # other objective: no down -> no pair
        _labeled("q", "z", False, n=7),  # other prompt: no up -> no pair
    ]
    pairs = discordant_pairs(records, seed=3)
    assert len(pairs) == 2
    assert all(p.prompt == "p" and p.objective is None for p in pairs)
    assert {p.chosen for p in pairs} == {"a", "c"}
    assert len({p.rejected for p in pairs}) == 2 and {p.rejected for p in pairs} <= {"b", "d", "e"}
    ups = {r.completion: r for r in records[:5]}
    for p in pairs:
        assert p.id == stable_id("discordant", ups[p.chosen].id, ups[p.rejected].id)
        assert p.source == f"{ups[p.chosen].source}|{ups[p.rejected].source}"


def test_deterministic_given_seed_and_seed_changes_matching():
    records = [_labeled("p", f"u{i}", True, n=i) for i in range(6)] + [
        _labeled("p", f"d{i}", False, n=10 + i) for i in range(6)
    ]
    first = discordant_pairs(records, seed=0)
    assert first == discordant_pairs(list(records), seed=0)
    matchings = {tuple((p.chosen, p.rejected) for p in discordant_pairs(records, seed=s)) for s in range(8)}
    assert len(matchings) > 1


def test_group_pairing_does_not_depend_on_other_groups():
    group = [_labeled("p", "a", True, n=1), _labeled("p", "b", False, n=2), _labeled("p", "c", False, n=3)]
    other = [_labeled("q", "x", True, n=4), _labeled("q", "y", False, n=5)]
    alone = discordant_pairs(group, seed=5)
    mixed = [p for p in discordant_pairs(other + group, seed=5) if p.prompt == "p"]
    assert alone == mixed


def test_max_pairs_per_prompt_and_identical_texts_are_not_paired():
    records = [_labeled("p", f"u{i}", True, n=i) for i in range(5)] + [
        _labeled("p", f"d{i}", False, n=10 + i) for i in range(5)
    ]
    assert len(discordant_pairs(records, max_pairs_per_prompt=2)) == 2
    same = [_labeled("p", "a", True, n=1), _labeled("p", "a", False, n=2)]
    assert discordant_pairs(same) == []
    mixed = same + [_labeled("p", "b", False, n=3)]
    for seed in range(10):
        pairs = discordant_pairs(mixed, seed=seed)
        assert all(p.chosen != p.rejected for p in pairs)
        assert [(p.chosen, p.rejected) for p in pairs] in ([], [("a", "b")])
    with pytest.raises(TypeError, match="record 0"):
        discordant_pairs([PairRecord("p", "a", "b")])
    with pytest.raises(ValueError):
        discordant_pairs(records, max_pairs_per_prompt=0)


def _discordant_preference_rates(winners, losers, k):
    """Empirical P(a preferred over b | a discordant pair of a and b) for a < b, with counts."""
    counts = Counter(zip(winners.tolist(), losers.tolist(), strict=True))
    rates = {}
    for a in range(k):
        for b in range(a + 1, k):
            n_ab, n_ba = counts[(a, b)], counts[(b, a)]
            rates[(a, b)] = (n_ab / (n_ab + n_ba), n_ab + n_ba)
    return rates


def _assert_bt(rates):
    for (a, b), (p_hat, n) in rates.items():
        p = 1.0 / (1.0 + math.exp(-(REWARDS[a] - REWARDS[b])))
        tolerance = 4.5 * math.sqrt(p * (1 - p) / n)
        assert abs(p_hat - p) < tolerance, ((a, b), p_hat, p, n)


@pytest.mark.parametrize("threshold", [-2.0, 0.0, 1.5])
def test_discordant_order_is_bradley_terry_whatever_the_threshold(threshold):
    """Monte Carlo of the derivation: labels u ~ Bernoulli(sigma(r - c)) on two iid draws."""
    rng = np.random.default_rng(1234)
    n, k = 400_000, len(REWARDS)
    y1, y2 = rng.integers(k, size=n), rng.integers(k, size=n)
    u1 = rng.random(n) < _sigmoid(REWARDS[y1] - threshold)
    u2 = rng.random(n) < _sigmoid(REWARDS[y2] - threshold)
    keep = (u1 != u2) & (y1 != y2)
    winners, losers = np.where(u1, y1, y2)[keep], np.where(u1, y2, y1)[keep]
    _assert_bt(_discordant_preference_rates(winners, losers, k))
    # the raw up-rate depends strongly on c; the discordant order does not
    up_rate = float(u1.mean())
    assert abs(up_rate - float(_sigmoid(REWARDS - threshold).mean())) < 0.01


def test_discordant_pairs_function_recovers_bradley_terry():
    """Same simulation through discordant_pairs: per prompt two iid samples, labeled with a
    prompt-specific threshold c(x); the formed pairs follow sigma(r_a - r_b)."""
    rng = np.random.default_rng(7)
    n_prompts, k = 30_000, len(REWARDS)
    thresholds = rng.normal(0.5, 1.5, size=n_prompts)
    draws = rng.integers(k, size=(n_prompts, 2))
    ups = rng.random((n_prompts, 2)) < _sigmoid(REWARDS[draws] - thresholds[:, None])
    records = [
        LabeledRecord(f"x{i}", f"y{draws[i, j]}", bool(ups[i, j]), id=f"{i}.{j}")
        for i in range(n_prompts)
        for j in range(2)
    ]
    pairs = discordant_pairs(records, seed=0)
    expected = int(((ups[:, 0] != ups[:, 1]) & (draws[:, 0] != draws[:, 1])).sum())
    assert len(pairs) == expected
    winners = np.array([int(p.chosen[1:]) for p in pairs])
    losers = np.array([int(p.rejected[1:]) for p in pairs])
    _assert_bt(_discordant_preference_rates(winners, losers, k))


def test_repeated_completions_keep_bradley_terry_order():
    """Many samples of few distinct texts (as from a policy): the up/down matching must not
    skip ahead to a different text, which would bias the order away from BT (§14)."""
    import math

    import numpy as np

    rng = np.random.default_rng(0)
    rewards = {"y0": 1.0, "y1": 0.0, "y2": -1.0}
    texts = list(rewards)
    records = []
    for n in range(30000):
        y = texts[rng.integers(3)]
        up = bool(rng.random() < 1 / (1 + math.exp(-(rewards[y] - 0.5))))
        records.append(_labeled("p", y, up, n=n))
    wins: dict[tuple[str, str], int] = {}
    for pair in discordant_pairs(records, seed=1):
        wins[(pair.chosen, pair.rejected)] = wins.get((pair.chosen, pair.rejected), 0) + 1
    for a, b in [("y0", "y1"), ("y1", "y2"), ("y0", "y2")]:
        n_ab, n_ba = wins.get((a, b), 0), wins.get((b, a), 0)
        expected = 1 / (1 + math.exp(-(rewards[a] - rewards[b])))
        se = math.sqrt(expected * (1 - expected) / (n_ab + n_ba))
        assert abs(n_ab / (n_ab + n_ba) - expected) < 4 * se, (a, b, n_ab, n_ba)
