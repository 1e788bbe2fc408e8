"""The tie-aware row of the exact benchmark: DPO-RK recovers pi*_w from Rao-Kupper pairs with
ties; plain DPO with the ties dropped does not (docs/ALGORITHMS.md §17)."""

import torch

from feedalign.bench.exact import BenchContext, ExactBenchConfig
from feedalign.bench.exact_ties import TIE_LOG_THETA, rows_ties, sample_rk_pairs
from feedalign.losses.pairwise_ties import rao_kupper_probabilities


def test_sampled_outcomes_follow_the_rao_kupper_probabilities():
    ctx = BenchContext(ExactBenchConfig.quick())
    data = sample_rk_pairs(ctx.env, 200_000, ctx.w, TIE_LOG_THETA, 3)
    x, a, b = data["prompt"], data["chosen"], data["rejected"]
    d = (ctx.env.rewards[x, a] - ctx.env.rewards[x, b]) @ ctx.w.to(ctx.env.rewards.dtype)
    win, tie, lose = rao_kupper_probabilities(d, TIE_LOG_THETA)
    # Expected fraction of ties, given the pairs drawn (the order within a tie is arbitrary).
    assert abs(data["tie"].double().mean() - tie.mean()) < 0.005
    decided = ~data["tie"]
    # Among decided pairs the chosen one won: its win probability exceeds the loss probability on average.
    assert (win[decided] / (win[decided] + lose[decided])).mean() > 0.5


def test_dpo_rk_reaches_pi_star_and_dpo_without_ties_does_not():
    rows = {r["method"]: r for r in rows_ties(BenchContext(ExactBenchConfig.quick()))}
    rk, dpo = rows["dpo_rk"], rows["dpo"]
    assert rk["passed"] and rk["tv_to_target"] < 0.01
    assert dpo["tv_to_target"] > 5 * rk["tv_to_target"]
    assert rk["n_feedback"] > dpo["n_feedback"]  # the ties are kept as data
