"""Reward-model scale for MODPO margins: BT slope 1 when the scale is right, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from feedalign.multiobjective.calibration import bt_slope, calibration_table, pair_differences


def test_bt_slope_recovers_the_generating_scale():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 2.0, 20_000)
    for true in (1.0, 0.42, 2.5):
        labels = rng.random(d.size) < 1 / (1 + np.exp(-true * d))
        out = bt_slope(d, labels)
        assert abs(out["slope"] - true) < 3 * out["se"], (true, out)
    with pytest.raises(ValueError, match="all reward differences are 0"):
        bt_slope(np.zeros(4), [1, 0, 1, 0])


def test_reward_model_fitted_on_bt_pairs_is_on_the_margin_scale():
    """A bt_reward model fitted on BT pairs with known reward differences (exact environment,
    through the registered loss) gives slope 1 within its standard error on fresh pairs, and
    its reward differences equal the true ones (slope 1 in a regression through the origin)."""
    from feedalign.envs import exact_feedback as fb
    from feedalign.envs.exact import ExactEnv
    from feedalign.policies.tabular import TabularReward
    from feedalign.policies.tabular_fit import fit_tabular

    env = ExactEnv(4, 4, 2, seed=0)
    train = fb.compress(fb.sample_pairs(env, 200_000, objective=1, generator=1))
    model = TabularReward(env.n_prompts, env.n_responses)
    fit_tabular(model, "bt_reward", train, steps=4, lr=1.0, optimizer="lbfgs")
    test = fb.sample_pairs(env, 40_000, objective=1, generator=2)
    table = model.table.detach().double()
    learned_c = table[test["prompt"], test["chosen"]].numpy()
    learned_r = table[test["prompt"], test["rejected"]].numpy()
    d, first_chosen = pair_differences(learned_c, learned_r, seed=3)
    out = bt_slope(d, first_chosen)
    assert abs(out["slope"] - 1) < 3 * out["se"] and out["se"] < 0.03, out
    true = env.rewards[..., 1]
    td = (true[test["prompt"], test["chosen"]] - true[test["prompt"], test["rejected"]]).numpy()
    ld = learned_c - learned_r
    assert float(td @ ld / (td @ td)) == pytest.approx(1.0, abs=0.03)
    # Halving the margins (a normalised head) is detected: slope 2.
    half = bt_slope(d / 2, first_chosen)
    assert abs(half["slope"] - 2) < 3 * half["se"]
    rows = calibration_table(d, first_chosen, bins=5)
    assert sum(r["n"] for r in rows) == d.size
    assert all(abs(r["predicted"] - r["empirical"]) < 4 * r["se"] + 0.01 for r in rows)
