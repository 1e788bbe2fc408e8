import math

import numpy as np
import pytest

from feedalign.data.records import FeedbackKind, LabeledRecord, PairRecord, ScoredRecord, set_kind
from feedalign.envs.annotators import (
    bt_pairs,
    flip_labels,
    group_by_prompt,
    logistic_thumbs,
    make_utility,
    negative_only,
    positive_only,
    scored,
    simulate,
)
from feedalign.envs.text_task import TextTask

# A hand-made scorer: each completion is a word with fixed scores.
TABLE = {"a": (0.3, 0.9), "b": (0.1, 0.2), "c": (0.5, 0.0), "d": (0.0, 1.0)}


def table_scorer(prompt, completion):
    helpful, concise = TABLE[completion]
    return {"helpful": helpful, "concise": concise}


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def many(prompts, completions):
    return [(f"p{i}", c) for i in range(prompts) for c in completions]


def test_utility_objective_and_weights():
    u = make_utility(table_scorer, objective="helpful")
    assert u("x", "a") == 0.3
    w = make_utility(table_scorer, weights={"helpful": 0.25, "concise": 0.75})
    assert w("x", "a") == pytest.approx(0.25 * 0.3 + 0.75 * 0.9)
    with pytest.raises(ValueError, match="exactly one"):
        make_utility(table_scorer)
    with pytest.raises(ValueError, match="exactly one"):
        make_utility(table_scorer, objective="helpful", weights={"helpful": 1.0})
    with pytest.raises(ValueError, match=r"\['style'\].*concise"):
        make_utility(table_scorer, objective="style")("x", "a")


def test_group_by_prompt_keeps_first_appearance_order():
    groups = group_by_prompt([("q", "a"), ("p", "b"), ("q", "c")])
    assert list(groups) == ["q", "p"] and groups["q"] == ["a", "c"]


def test_bt_pairs_kinds_counts_and_tags():
    samples = many(3, ["a", "b", "c", "d", "a"])
    disjoint = bt_pairs(samples, table_scorer, objective="helpful", seed=0)
    assert all(isinstance(r, PairRecord) and r.objective == "helpful" for r in disjoint)
    assert all(r.chosen != r.rejected for r in disjoint)
    assert len(disjoint) <= 3 * 2  # 5 completions -> at most 2 disjoint pairs per prompt
    every = bt_pairs(samples, table_scorer, objective="helpful", pairing="all", seed=0)
    assert len(every) == 3 * (10 - 1)  # C(5,2) minus the identical ("a", "a") pair
    capped = bt_pairs(samples, table_scorer, objective="helpful", pairing="all",
                      max_pairs_per_prompt=4, seed=0)
    assert len(capped) == 12
    tagged = bt_pairs(samples, table_scorer, weights={"helpful": 1.0}, tag="w=1,0", seed=0)
    assert {r.objective for r in tagged} == {"w=1,0"}
    assert set_kind(tagged) is FeedbackKind.PAIR


def test_bt_pairs_deterministic_with_seed():
    samples = many(20, ["a", "b", "c", "d"])
    run = lambda s: [(r.chosen, r.rejected) for r in bt_pairs(samples, table_scorer,
                                                                objective="helpful", seed=s)]
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_bt_pairs_temperature_zero_picks_the_better():
    samples = many(10, ["a", "b", "c", "d"])
    for objective in ("helpful", "concise"):
        for r in bt_pairs(samples, table_scorer, objective=objective, temperature=0.0,
                          pairing="all"):
            assert table_scorer("", r.chosen)[objective] > table_scorer("", r.rejected)[objective]


def test_bt_preference_rate_matches_sigmoid_monte_carlo():
    # u(a) - u(b) = 0.2 on helpful; T = 0.1 -> P(a chosen) = sigma(2) = 0.8808
    n = 4000
    pairs = bt_pairs(many(n, ["a", "b"]), table_scorer, objective="helpful",
                     temperature=0.1, seed=11)
    rate = np.mean([r.chosen == "a" for r in pairs])
    expected = sigmoid(2.0)
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    # weighted utility: 0.5*(0.3-0.1) + 0.5*(0.9-0.2) = 0.45, T = 0.5 -> sigma(0.9)
    pairs = bt_pairs(many(n, ["a", "b"]), table_scorer, weights={"helpful": 0.5,
                     "concise": 0.5}, temperature=0.5, seed=12)
    rate = np.mean([r.chosen == "a" for r in pairs])
    expected = sigmoid(0.9)
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_logistic_thumbs_rate_matches_sigmoid_monte_carlo():
    n = 4000
    thumbs = logistic_thumbs(many(n, ["a"]), table_scorer, objective="helpful",
                             threshold=0.2, temperature=0.1, seed=5)
    assert all(isinstance(r, LabeledRecord) and r.objective == "helpful" for r in thumbs)
    expected = sigmoid((0.3 - 0.2) / 0.1)
    rate = np.mean([r.label for r in thumbs])
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    # callable threshold c(x), differing per prompt
    thumbs = logistic_thumbs(many(n, ["a"]), table_scorer, objective="helpful",
                             threshold=lambda p: 0.5 if int(p[1:]) % 2 else 0.3,
                             temperature=0.1, seed=6)
    odd = np.mean([r.label for i, r in enumerate(thumbs) if i % 2])
    even = np.mean([r.label for i, r in enumerate(thumbs) if not i % 2])
    assert abs(odd - sigmoid(-2.0)) < 0.04 and abs(even - 0.5) < 0.04


def test_logistic_thumbs_prompt_mean_threshold_at_zero_temperature():
    samples = many(2, ["a", "b", "c", "d"])  # helpful mean = 0.225
    thumbs = logistic_thumbs(samples, table_scorer, objective="helpful", temperature=0.0)
    assert [r.completion for r in thumbs if r.label] == ["a", "c", "a", "c"]
    assert set_kind(thumbs) is FeedbackKind.LABELED
    median = logistic_thumbs(samples, table_scorer, objective="concise",
                             threshold="prompt_median", temperature=0.0)  # median 0.55
    assert [r.completion for r in median if r.label] == ["a", "d", "a", "d"]
    with pytest.raises(ValueError, match="prompt_mean"):
        logistic_thumbs(samples, table_scorer, objective="helpful", threshold="mode")


def test_top_k_and_bottom_k():
    samples = many(3, ["a", "b", "c", "d"])
    top = positive_only(samples, table_scorer, objective="helpful", top_k=2)
    assert set_kind(top) is FeedbackKind.POSITIVE
    assert [r.completion for r in top] == ["c", "a"] * 3
    bottom = negative_only(samples, table_scorer, objective="concise", bottom_k=1)
    assert set_kind(bottom) is FeedbackKind.NEGATIVE
    assert [r.completion for r in bottom] == ["c"] * 3 and all(r.objective == "concise"
                                                               for r in bottom)
    with pytest.raises(ValueError, match="k=0"):
        positive_only(samples, table_scorer, objective="helpful", top_k=0)


def test_thresholded_one_sided_feedback_is_one_class_of_thumbs():
    samples = many(50, ["a", "b", "c", "d"])
    kwargs = dict(objective="helpful", temperature=0.1, seed=9)
    thumbs = logistic_thumbs(samples, table_scorer, **kwargs)
    ups = positive_only(samples, table_scorer, **kwargs)
    downs = negative_only(samples, table_scorer, **kwargs)
    assert [(r.prompt, r.completion) for r in ups] == [
        (r.prompt, r.completion) for r in thumbs if r.label]
    assert [(r.prompt, r.completion) for r in downs] == [
        (r.prompt, r.completion) for r in thumbs if not r.label]
    assert all(r.label for r in ups) and not any(r.label for r in downs)


def test_scored_records_and_noise():
    recs = scored(many(2, ["a", "d"]), table_scorer)
    assert all(isinstance(r, ScoredRecord) for r in recs)
    assert dict(recs[1].scores) == {"helpful": 0.0, "concise": 1.0}
    only = scored([("x", "a")], table_scorer, objectives=["concise"])
    assert dict(only[0].scores) == {"concise": 0.9}
    noisy = scored(many(3000, ["a"]), table_scorer, noise_std=0.2, seed=1)
    values = np.array([r.scores["helpful"] for r in noisy])
    assert abs(values.mean() - 0.3) < 0.02 and abs(values.std() - 0.2) < 0.02
    with pytest.raises(ValueError, match="not scored"):
        scored([("x", "a")], table_scorer, objectives=["style"])


def test_flip_labels_rate_and_identity():
    pairs = bt_pairs(many(3000, ["a", "b"]), table_scorer, objective="helpful",
                     temperature=0.0)
    assert flip_labels(pairs, 0.0) == pairs
    flipped = flip_labels(pairs, 0.25, seed=2)
    changed = [f.chosen != p.chosen for f, p in zip(flipped, pairs)]
    assert abs(np.mean(changed) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(pairs))
    for f, p, c in zip(flipped, pairs, changed):
        assert (f.chosen, f.rejected) == ((p.rejected, p.chosen) if c else (p.chosen, p.rejected))
        assert (f.id != p.id) == c
    assert flip_labels(pairs, 0.25, seed=2) == flipped
    thumbs = logistic_thumbs(many(10, ["a", "b"]), table_scorer, objective="helpful")
    assert [r.label for r in flip_labels(thumbs, 1.0)] == [not r.label for r in thumbs]
    with pytest.raises(TypeError, match="ScoredRecord"):
        flip_labels(scored([("x", "a")], table_scorer), 0.5)
    with pytest.raises(ValueError, match="rate"):
        flip_labels(pairs, 1.5)


def test_simulate_dispatches_by_kind():
    samples = many(4, ["a", "b", "c", "d"])
    assert set_kind(simulate("pair", samples, table_scorer, objective="helpful")) is \
        FeedbackKind.PAIR
    assert set_kind(simulate("negative", samples, table_scorer, objective="helpful",
                             bottom_k=1)) is FeedbackKind.NEGATIVE
    with pytest.raises(ValueError, match="scored"):
        simulate("ranking", samples, table_scorer)


def test_annotators_on_the_text_task_carry_signal():
    task = TextTask(seed=0)
    samples = task.sft_samples(200, per_prompt=4, seed=1)
    for objective in task.OBJECTIVES:
        pairs = bt_pairs(samples, task.score, objective=objective, temperature=0.1, seed=0)
        chosen = np.mean([task.score(r.prompt, r.chosen)[objective] for r in pairs])
        rejected = np.mean([task.score(r.prompt, r.rejected)[objective] for r in pairs])
        assert chosen > rejected + 0.15
        ups = positive_only(samples, task.score, objective=objective, top_k=1)
        downs = negative_only(samples, task.score, objective=objective, bottom_k=1)
        up_mean = np.mean([task.score(r.prompt, r.completion)[objective] for r in ups])
        down_mean = np.mean([task.score(r.prompt, r.completion)[objective] for r in downs])
        assert up_mean > down_mean + 0.3
