"""Simulated annotators of the exact environment produce the distributions they claim."""

from __future__ import annotations

import pytest
import torch

from feedalign.envs import exact_feedback as fb
from feedalign.envs.exact import DTYPE, ExactEnv

W = torch.tensor([0.6, 0.4], dtype=DTYPE)


@pytest.fixture(scope="module")
def env() -> ExactEnv:
    return ExactEnv(3, 4, 2, beta=1.0, seed=2)


def _freq(mask: torch.Tensor) -> float:
    return float(mask.double().mean())


def _close(observed: float, expected: float, n: int, k: float = 4.5) -> bool:
    return abs(observed - expected) <= k * (expected * (1 - expected) / n) ** 0.5 + 1e-12


def test_pair_labels_follow_bt_with_flips(env):
    n = 200_000
    for flip in (0.0, 0.2):
        pairs = fb.sample_pairs(env, n, objective=1, flip_rate=flip, generator=1)
        assert (pairs["chosen"] != pairs["rejected"]).all()
        x, a, b = 1, 0, 2
        cell = (pairs["prompt"] == x) & (
            ((pairs["chosen"] == a) & (pairs["rejected"] == b)) | ((pairs["chosen"] == b) & (pairs["rejected"] == a))
        )
        wins = _freq(pairs["chosen"][cell] == a)
        p = float(torch.sigmoid(env.rewards[x, a, 1] - env.rewards[x, b, 1]))
        assert _close(wins, (1 - flip) * p + flip * (1 - p), int(cell.sum()))


def test_population_pairs_match_sampled_frequencies(env):
    population = fb.population_pairs(env, w=W, flip_rate=0.1)
    assert torch.isclose(population["weight"].sum(), torch.tensor(1.0, dtype=DTYPE))
    sampled = fb.compress(fb.sample_pairs(env, 300_000, w=W, flip_rate=0.1, generator=4))
    n = float(sampled["weight"].sum())
    lookup = {(int(x), int(a), int(b)): float(wt) for x, a, b, wt in zip(*population.values())}
    for x, a, b, count in list(zip(*sampled.values()))[:20]:
        expected = lookup[(int(x), int(a), int(b))]
        assert _close(float(count) / n, expected, int(n))


def test_per_example_weights_are_kept(env):
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DTYPE).repeat(50_000, 1)
    pairs = fb.sample_pairs(env, len(w), w=w, generator=3)
    assert torch.equal(pairs["w"], w.float())
    first = w[:, 0] == 1
    x, a, b = 0, 1, 3
    for k, rows in ((0, first), (1, ~first)):
        cell = rows & (pairs["prompt"] == x) & (
            ((pairs["chosen"] == a) & (pairs["rejected"] == b)) | ((pairs["chosen"] == b) & (pairs["rejected"] == a))
        )
        p = float(torch.sigmoid(env.rewards[x, a, k] - env.rewards[x, b, k]))
        assert _close(_freq(pairs["chosen"][cell] == a), p, int(cell.sum()))


def test_thumbs_probability_and_class_splits(env):
    thumbs = fb.sample_thumbs(env, 200_000, w=W, generator=5)
    p = env.accept_probability(W)
    for x, y in ((0, 0), (2, 3)):
        rows = (thumbs["prompt"] == x) & (thumbs["response"] == y)
        assert _close(_freq(thumbs["label"][rows]), float(p[x, y]), int(rows.sum()))
    pos, neg = fb.positive_only(thumbs), fb.negative_only(thumbs)
    assert pos["label"].all() and not neg["label"].any()
    assert len(pos["prompt"]) + len(neg["prompt"]) == 200_000
    flipped = fb.sample_thumbs(env, 200_000, w=W, flip_rate=0.25, generator=5)
    rows = (flipped["prompt"] == 0) & (flipped["response"] == 0)
    assert _close(_freq(flipped["label"][rows]), 0.75 * float(p[0, 0]) + 0.25 * (1 - float(p[0, 0])), int(rows.sum()))


def test_discordant_pairs_use_each_row_once(env):
    thumbs = fb.sample_thumbs(env, 5000, w=W, generator=6)
    pairs = fb.discordant_pairs(thumbs, generator=7)
    for x in range(3):
        rows = thumbs["prompt"] == x
        n_up, n_down = int((rows & thumbs["label"]).sum()), int((rows & ~thumbs["label"]).sum())
        assert int((pairs["prompt"] == x).sum()) == min(n_up, n_down)
        # chosen responses are drawn from that prompt's thumbs-up rows (multiset inclusion)
        up_counts = torch.bincount(thumbs["response"][rows & thumbs["label"]], minlength=4)
        chosen_counts = torch.bincount(pairs["chosen"][pairs["prompt"] == x], minlength=4)
        assert (chosen_counts <= up_counts).all()


def test_compress_roundtrip_and_rejects_float_columns(env):
    thumbs = fb.sample_thumbs(env, 1000, w=W, generator=8)
    compressed = fb.compress(thumbs)
    assert compressed["label"].dtype == torch.bool
    assert float(compressed["weight"].sum()) == 1000
    rows = set(zip(thumbs["prompt"].tolist(), thumbs["response"].tolist(), thumbs["label"].tolist()))
    assert rows == set(zip(compressed["prompt"].tolist(), compressed["response"].tolist(), compressed["label"].tolist()))
    with pytest.raises(ValueError, match="index/bool"):
        fb.compress(fb.sample_scores(env, 10, generator=1))


def test_scores_and_population_thumbs(env):
    scores = fb.sample_scores(env, 100, noise=0.0, generator=9)
    assert torch.allclose(scores["scores"], env.rewards[scores["prompt"], scores["response"]])
    population = fb.population_thumbs(env, w=W)
    assert torch.isclose(population["weight"].sum(), torch.tensor(1.0, dtype=DTYPE))
    up = population["weight"][population["label"]].sum()
    assert torch.isclose(up, (env.ref_probs * env.accept_probability(W)).sum(-1).mean())
