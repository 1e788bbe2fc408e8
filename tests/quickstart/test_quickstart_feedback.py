"""The quickstart's feedback files and its held-out comparison, on hand-made pools."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedalign.data import LabeledRecord, PairRecord, load_records
from feedalign.quickstart.evaluate import PolicySamples, compare
from feedalign.quickstart.feedback import (
    SamplePool,
    count_records,
    simulate_feedback,
    write_and_reload,
)


def _score(prompt: str, completion: str) -> dict[str, float]:
    """A toy scorer: helpful = share of 'a' words, concise = 1 - words / 8."""
    words = completion.split()
    return {"helpful": words.count("a") / max(1, len(words)), "concise": max(0.0, 1 - len(words) / 8)}


def _pool(groups: list[list[str]]) -> SamplePool:
    samples = [(f"p{i}", c) for i, group in enumerate(groups) for c in group]
    scores = {o: np.array([_score(p, c)[o] for p, c in samples]) for o in ("helpful", "concise")}
    return SamplePool(samples, scores)


def test_empty_completions_are_not_judged():
    pool = _pool([["", "a b", "  "], ["a", "b b"]])
    assert pool.judged() == [("p0", "a b"), ("p1", "a"), ("p1", "b b")]
    sets = simulate_feedback(pool, _score, seed=0, pair_temperature=0.1, thumb_temperature=0.1)
    for records in sets.values():
        for r in records:
            texts = [r.chosen, r.rejected] if isinstance(r, PairRecord) else [r.completion]
            assert all(t.strip() for t in texts)


def test_duplicate_samples_get_unique_ids_and_round_trip_through_the_loader(tmp_path):
    # the same completion sampled several times for one prompt, judged alike
    pool = _pool([["a a", "a a", "a a", "b"], ["a", "a b", "b b b", "a"]] * 3)
    sets = simulate_feedback(pool, _score, seed=1, pair_temperature=0.1, thumb_temperature=0.1)
    assert set(sets) == {"pairs_helpful", "pairs_concise", "thumbs_helpful", "thumbs_concise", "accepted_overall",
                         "rejected_overall"}
    paths, counts = write_and_reload(sets, tmp_path / "feedback")
    for name, records in sets.items():
        assert len({r.id for r in records}) == len(records)
        loaded = load_records(paths[name]).records
        assert [(r.id, r.prompt) for r in loaded] == [(r.id, r.prompt) for r in records]
        assert counts[name] == count_records(records)
        assert paths[name] == tmp_path / "feedback" / f"{name}.jsonl"
    assert all(isinstance(r, PairRecord) and r.objective == "helpful" for r in sets["pairs_helpful"])
    assert {r.objective for r in sets["thumbs_concise"]} == {"concise"}
    assert counts["thumbs_helpful"]["up"] + counts["thumbs_helpful"]["down"] == len(pool.judged())
    assert counts["accepted_overall"] == {"up": 6, "down": 0} and counts["rejected_overall"] == {"up": 0, "down": 6}
    again = simulate_feedback(pool, _score, seed=1, pair_temperature=0.1, thumb_temperature=0.1)
    assert again == sets  # seeded


def test_accepted_and_rejected_are_the_best_and_worst_on_the_overall_score():
    groups = [["a", "a b b b", "b b", "a a b"], ["b", "a a a a a", "a b"]]
    pool = _pool(groups)
    sets = simulate_feedback(pool, _score, seed=0, pair_temperature=0.1, thumb_temperature=0.1)

    def overall(c: str) -> float:
        s = _score("", c)
        return 0.5 * s["helpful"] + 0.5 * s["concise"]

    for i, group in enumerate(groups):
        (best,) = [r.completion for r in sets["accepted_overall"] if r.prompt == f"p{i}"]
        (worst,) = [r.completion for r in sets["rejected_overall"] if r.prompt == f"p{i}"]
        assert overall(best) == max(map(overall, group)) and overall(worst) == min(map(overall, group))


def test_thumbs_follow_the_objective_at_low_temperature():
    pool = _pool([["a", "b", "a b", "b b"]] * 5)
    sets = simulate_feedback(pool, _score, seed=0, pair_temperature=1e-4, thumb_temperature=1e-4)
    for r in sets["thumbs_helpful"]:  # prompt mean of helpful = (1 + 0 + 0.5 + 0) / 4
        assert r.label == (_score("", r.completion)["helpful"] > 0.375)
    for r in sets["pairs_helpful"]:
        assert _score("", r.chosen)["helpful"] >= _score("", r.rejected)["helpful"]


def test_count_records():
    recs = [LabeledRecord("p", "a", True, id="1"), LabeledRecord("p", "b", False, id="2"),
            LabeledRecord("p", "c", True, id="3")]
    assert count_records(recs) == {"up": 2, "down": 1}
    assert count_records([PairRecord("p", "a", "b")]) == {"pairs": 1}


def _samples(helpful: list[float], concise: list[float]) -> PolicySamples:
    return PolicySamples(["x"] * len(helpful), {"helpful": np.array(helpful), "concise": np.array(concise)}, 1.0, 1.0)


def test_compare_hand_worked_paired_standard_error():
    before = _samples([0.0, 0.5, 1.0, 0.5], [1.0, 1.0, 1.0, 1.0])
    after = _samples([0.5, 0.5, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0])
    # helpful: d = (0.5, 0, 0, 0.5): mean 0.25, sd = sqrt(4 * 0.25^2 / 3) -> se = sd / 2 = 0.1443
    out = compare(before, after, ("helpful", "concise"), (1.0, 0.0), margin=0.05, z=2.0)
    se = math.sqrt(4 * 0.25**2 / 3) / 2
    assert out["target"]["improvement"] == pytest.approx(0.25)
    assert out["target"]["improvement_se"] == pytest.approx(se)
    assert out["per_objective"]["concise"]["improvement"] == pytest.approx(-0.25)
    assert out["passed"] is False  # 0.25 >= 0.05 but 0.25 < 2 * 0.1443
    loose = compare(before, after, ("helpful", "concise"), (1.0, 0.0), margin=0.05, z=1.5)
    assert loose["passed"] is True
    # the 0.5/0.5 target: d = (-0.25, 0, 0, 0.25) -> mean 0: fails the margin
    mixed = compare(before, after, ("helpful", "concise"), (0.5, 0.5), margin=0.05, z=0.0)
    assert mixed["target"]["improvement"] == pytest.approx(0.0) and mixed["passed"] is False
