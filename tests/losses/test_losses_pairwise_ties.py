"""DPO-RK (Rao-Kupper ties): hand-worked values, the outcome probabilities, the symmetry of a
tie, reduction to DPO, and the closed-form optimum of the expected loss."""

from __future__ import annotations

import math

import pytest
import torch

from feedalign.losses import get_loss
from feedalign.losses.pairwise_ties import dpo_rk_loss, rao_kupper_optimum, rao_kupper_probabilities


def test_registered_with_the_registry_decorator():
    spec = get_loss("dpo_rk")
    assert spec.feedback == "pair" and spec.needs_reference
    assert spec.hparams == {"beta": 0.1, "tie_log_theta": 1.0}


def test_hand_worked_values():
    # beta = 1, policy log-ratios: chosen 1.0, rejected 0.0 -> d = 1; nu = 1
    pc, pr = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])
    zeros = torch.zeros(2)
    losses, metrics = dpo_rk_loss(pc, pr, zeros, zeros, ties=torch.tensor([False, True]), beta=1.0, tie_log_theta=1.0)
    win = math.log1p(math.exp(0.0))  # softplus(nu - d) = softplus(0)
    tie = win + math.log1p(math.exp(2.0)) - math.log(math.expm1(2.0))
    assert losses.tolist() == pytest.approx([win, tie])
    assert float(metrics["ties/fraction"]) == 0.5


@pytest.mark.parametrize("nu", [0.1, 0.7, 2.0])
def test_probabilities_sum_to_one_and_match_the_loss(nu):
    d = torch.linspace(-4, 4, 17, dtype=torch.float64)
    win, tie, lose = rao_kupper_probabilities(d, nu)
    assert torch.allclose(win + tie + lose, torch.ones_like(d))
    zeros = torch.zeros_like(d)
    no_tie, _ = dpo_rk_loss(d, zeros, zeros, zeros, ties=torch.zeros_like(d, dtype=torch.bool), beta=1.0, tie_log_theta=nu)
    all_tie, _ = dpo_rk_loss(d, zeros, zeros, zeros, ties=torch.ones_like(d, dtype=torch.bool), beta=1.0, tie_log_theta=nu)
    assert torch.allclose(no_tie, -torch.log(win)) and torch.allclose(all_tie, -torch.log(tie))
    # at d = 0 the tie probability is (theta - 1) / (theta + 1)
    theta = math.exp(nu)
    assert float(tie[8]) == pytest.approx((theta - 1) / (theta + 1))


def test_tie_is_symmetric_and_its_gradient_pulls_the_margin_to_zero():
    pc = torch.tensor([0.8], requires_grad=True)
    pr = torch.tensor([0.1], requires_grad=True)
    ref = torch.zeros(1)
    ties = torch.tensor([True])
    forward, _ = dpo_rk_loss(pc, pr, ref, ref, ties=ties, beta=0.5)
    swapped, _ = dpo_rk_loss(pr, pc, ref, ref, ties=ties, beta=0.5)
    assert float(forward.detach()) == pytest.approx(float(swapped.detach()))
    forward.sum().backward()
    assert float(pc.grad) > 0 > float(pr.grad)  # descent lowers the larger side: the margin shrinks


def test_without_ties_it_is_dpo_when_nu_goes_to_zero():
    pc, pr, rc, rr = (torch.randn(6, generator=torch.Generator().manual_seed(s)) for s in range(4))
    dpo, _ = get_loss("dpo").fn(pc, pr, rc, rr, beta=0.3)
    rk, _ = dpo_rk_loss(pc, pr, rc, rr, ties=None, beta=0.3, tie_log_theta=1e-9)
    assert torch.allclose(dpo, rk, atol=1e-6)


@pytest.mark.parametrize(("wins", "losses", "ties"), [(0.6, 0.1, 0.3), (0.2, 0.5, 0.3), (0.45, 0.45, 0.1)])
def test_expected_loss_minimum_is_the_closed_form(wins, losses, ties):
    nu = 0.8
    d = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([d], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)
    zero = torch.zeros(1, dtype=torch.float64)

    def expected() -> torch.Tensor:
        win, _ = dpo_rk_loss(d, zero, zero, zero, ties=torch.tensor([False]), beta=1.0, tie_log_theta=nu)
        lose, _ = dpo_rk_loss(zero, d, zero, zero, ties=torch.tensor([False]), beta=1.0, tie_log_theta=nu)
        tie, _ = dpo_rk_loss(d, zero, zero, zero, ties=torch.tensor([True]), beta=1.0, tie_log_theta=nu)
        return (wins * win + losses * lose + ties * tie).sum()

    def closure():
        opt.zero_grad()
        value = expected()
        value.backward()
        return value

    opt.step(closure)
    found = float(d.detach())
    assert found == pytest.approx(rao_kupper_optimum(wins, losses, ties, nu), abs=1e-6)
    if wins == losses:
        assert found == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("true_margin", [-1.5, 0.0, 0.4, 2.0])
def test_population_optimum_recovers_the_generating_reward_gap(true_margin):
    # Outcomes drawn from Rao-Kupper with the loss's own nu: the optimum margin d* = beta*h is
    # the true reward gap, i.e. pi* ∝ pi_ref exp(r / beta) as for DPO on Bradley-Terry data.
    nu = 0.6
    win, tie, lose = (float(p) for p in rao_kupper_probabilities(torch.tensor(true_margin, dtype=torch.float64), nu))
    assert rao_kupper_optimum(win, lose, tie, nu) == pytest.approx(true_margin, abs=1e-9)


def test_exact_tabular_population_recovers_pi_star():
    # The population of Rao-Kupper outcomes (wins and ties) on the exact environment: fitting
    # dpo_rk on it reaches pi* ∝ pi_ref exp(w.r / beta), the closed-form target of DPO.
    from feedalign.envs.exact import DTYPE, ExactEnv, tv_distance
    from feedalign.policies.tabular import TabularPolicy
    from feedalign.policies.tabular_fit import fit_tabular

    env = ExactEnv(3, 4, 2, beta=1.0, seed=0)
    w = torch.tensor([0.6, 0.4], dtype=DTYPE)
    nu = 0.5
    x, a, b = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(4), indexing="ij")
    x, a, b = (t.reshape(-1) for t in (x, a, b))
    keep = a != b
    x, a, b = x[keep], a[keep], b[keep]
    mu = env.ref_probs
    mass = mu[x, a] * mu[x, b]  # P(unordered pair {a, b}) / 2; each order is a row
    d = (env.rewards[x, a] - env.rewards[x, b]) @ w
    win, tie, _ = rao_kupper_probabilities(d, nu)
    first_tie = a < b  # one tie row per unordered pair, on the scale of the win rows: mass * P(tie)
    feedback = {
        "prompt": torch.cat([x, x[first_tie]]),
        "chosen": torch.cat([a, a[first_tie]]),
        "rejected": torch.cat([b, b[first_tie]]),
        "weight": torch.cat([mass * win, mass[first_tie] * tie[first_tie]]).float(),
        "tie": torch.cat([torch.zeros_like(a, dtype=torch.bool), torch.ones(int(first_tie.sum()), dtype=torch.bool)]),
    }
    policy = TabularPolicy(3, 4, init_logits=env.ref_logp.float())
    fit_tabular(policy, "dpo_rk", feedback, hparams={"beta": env.beta, "tie_log_theta": nu},
                inputs={"ties": lambda ctx: ctx.batch["tie"]}, reference=env.ref_logp.float(),
                steps=30, lr=1.0, optimizer="lbfgs")
    target = env.optimum(w)
    assert tv_distance(policy.probs().detach().to(DTYPE), target) < 1e-3
    assert tv_distance(env.ref_probs, target) > 0.05  # the target is not the starting point
