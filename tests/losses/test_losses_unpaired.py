import math
import warnings

import pytest
import torch

from feedalign.losses import get_loss
from feedalign.losses.unpaired import bco_fixed_point, pmpo_target


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def logsig(z):
    return -math.log1p(math.exp(-z))


def sig(z):
    return 1 / (1 + math.exp(-z))


LABELS = torch.tensor([True, False])


def test_kto_hand_worked_and_reference_point_is_detached_and_clamped():
    kl_ref = t(0.2).requires_grad_()
    policy = t(0.5, 0.5).requires_grad_()
    losses, metrics = get_loss("kto").fn(policy, t(0.0, 0.0), LABELS, kl_ref=kl_ref, beta=1.0)
    assert losses[0].item() == pytest.approx(1 - sig(0.3))
    assert losses[1].item() == pytest.approx(1 - sig(-0.3))
    losses.sum().backward()
    assert kl_ref.grad is None  # z_ref carries no gradient
    neg, _ = get_loss("kto").fn(t(0.5), t(0.0), torch.tensor([True]), kl_ref=t(-3.0), beta=1.0)
    assert neg.item() == pytest.approx(1 - sig(0.5))  # max(0, kl) = 0
    assert metrics["kl_ref"].item() == pytest.approx(0.2)


def test_kto_class_weights_and_threshold_rule():
    """Expected gradient on rho has sign of lambda_U*(1-p) - lambda_D*p (ALGORITHMS.md §7)."""
    for p, lam_d, lam_u in [(0.3, 1.0, 1.0), (0.7, 1.0, 1.0), (0.3, 3.0, 1.0), (0.6, 1.0, 2.0)]:
        rho = t(0.4, 0.4).requires_grad_()
        losses, _ = get_loss("kto").fn(
            rho, t(0.0, 0.0), LABELS, kl_ref=t(0.1), beta=0.5, desirable_weight=lam_d, undesirable_weight=lam_u
        )
        (p * losses[0] + (1 - p) * losses[1]).backward()
        expected_grad_sign = math.copysign(1, lam_u * (1 - p) - lam_d * p)
        assert math.copysign(1, rho.grad.sum().item()) == expected_grad_sign


def test_bco_hand_worked_and_shift_is_detached():
    delta = t(0.2).requires_grad_()
    losses, metrics = get_loss("bco").fn(t(0.5, 0.5).requires_grad_(), t(0.0, 0.0), LABELS, delta=delta, beta=1.0)
    assert losses[0].item() == pytest.approx(-logsig(0.3))
    assert losses[1].item() == pytest.approx(-logsig(-0.3))
    losses.sum().backward()
    assert delta.grad is None
    assert metrics["rewards/accuracies"].item() == 0.5


def test_bco_fixed_point_satisfies_its_closed_form_conditions():
    """At the fixed point: delta is the midpoint of the class means of rhat, and the BCE
    residual sigma(rhat - delta) - p is proportional to pi/pi_ref within each prompt (§8)."""
    g = torch.Generator().manual_seed(3)
    ref = torch.softmax(torch.randn(3, 5, generator=g, dtype=torch.float64), -1)
    p = torch.sigmoid(torch.randn(3, 5, generator=g, dtype=torch.float64))
    beta = 0.7
    pi, delta = bco_fixed_point(ref, p, beta=beta)
    ratio = pi / ref
    rhat = beta * ratio.log()
    mass = ref / 3
    mid = ((mass * p * rhat).sum() / (mass * p).sum() + (mass * (1 - p) * rhat).sum() / (mass * (1 - p)).sum()) / 2
    assert delta == pytest.approx(float(mid), abs=1e-8)
    mu = (torch.sigmoid(rhat - delta) - p) / ratio
    assert torch.allclose(mu, mu[:, :1].expand_as(mu), atol=1e-7)
    # the population BCE gradient through bco_loss vanishes there (rows of both labels, weighted)
    logits = torch.log(pi).clone().requires_grad_()
    logp = torch.log_softmax(logits, -1).reshape(-1)
    ref_logp = ref.log().reshape(-1)
    both = torch.cat([logp, logp]), torch.cat([ref_logp, ref_logp])
    labels = torch.cat([torch.ones(15, dtype=torch.bool), torch.zeros(15, dtype=torch.bool)])
    weight = torch.cat([(mass * p).reshape(-1), (mass * (1 - p)).reshape(-1)])
    losses, _ = get_loss("bco").fn(*both, labels, delta=torch.tensor(delta), beta=beta)
    (losses * weight).sum().backward()
    assert logits.grad.abs().max().item() < 1e-7


def test_sft_sum_and_token_mean():
    losses, _ = get_loss("sft").fn(t(-4.0, -2.0))
    assert losses.tolist() == [4.0, 2.0]
    losses, _ = get_loss("sft").fn(t(-4.0, -2.0), length_normalize=True, lengths=t(4, 1))
    assert losses.tolist() == [1.0, 2.0]


def test_pmpo_hand_worked_monte_carlo_kl():
    losses, metrics = get_loss("pmpo").fn(t(-1.0, -1.0), t(-2.0, -2.0), LABELS, alpha=0.5, beta=1.0)
    # accepted: -0.5*(-1) + 1*(-2+1) = -0.5 ; rejected: +0.5*(-1) + (-1) = -1.5
    assert losses.tolist() == pytest.approx([-0.5, -1.5])
    assert metrics["kl"].item() == pytest.approx(-1.0)


def test_pmpo_explicit_kl_and_gradient_signs():
    logp = t(-1.0, -1.0).requires_grad_()
    losses, _ = get_loss("pmpo").fn(logp, None, LABELS, alpha=0.5, beta=0.0, kl=t(0.0))
    losses.sum().backward()
    assert logp.grad[0] < 0 < logp.grad[1]  # accepted pushed up, rejected pushed down


def test_pmpo_collapse_condition_is_reported():
    spec = get_loss("pmpo")
    with pytest.warns(UserWarning, match="collapse"):
        spec.resolve_hparams({"alpha": 0.0, "beta": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.resolve_hparams({"alpha": 0.0, "beta": 1.0})
        spec.resolve_hparams({"alpha": 1.0, "beta": 0.0})  # positive-only never collapses
    with pytest.raises(ValueError, match=r"alpha=1\.5 is invalid: expected a real number in \[0, 1\]"):
        spec.resolve_hparams({"alpha": 1.5})


def test_pmpo_target_matches_stationary_point_and_flags_collapse():
    ref = t(0.5, 0.3, 0.2)
    p = t(0.9, 0.5, 0.0)
    target, collapsed = pmpo_target(ref, p, alpha=0.5, beta=1.0)
    c = ref * (0.5 * p - 0.5 * (1 - p) + 1.0)
    assert torch.allclose(target, c / c.sum()) and not collapsed
    # the population objective sum_y c(y) log pi(y) - is maximised at pi = c/sum(c):
    logits = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [logits], max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = -(c * torch.log_softmax(logits, 0)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(torch.softmax(logits, 0), target, atol=1e-6)
    _, collapsed = pmpo_target(ref, p, alpha=0.0, beta=0.5)
    assert collapsed


def test_unknown_hparam_names_valid_ones():
    with pytest.raises(ValueError, match="valid"):
        get_loss("kto").resolve_hparams({"betta": 0.1})


def test_pmpo_multi_prompt_optimum_is_per_prompt():
    """The implemented reduction (mean over all rows, each prompt's KL weighted by its
    frequency) has the per-prompt optimum c_x/sum(c_x) whatever the prompt frequencies; the
    per-class-mean form of J gives another target (ALGORITHMS.md §9)."""
    from feedalign.envs import exact_feedback as fb
    from feedalign.envs.exact import ExactEnv, tv_distance
    from feedalign.policies.tabular import TabularPolicy
    from feedalign.policies.tabular_fit import exact_kl, fit_tabular

    w = torch.tensor([0.7, 0.3], dtype=torch.float64)
    env = ExactEnv(4, 4, 2, beta=1.0, seed=3)
    data = fb.population_thumbs(env, w=w)
    rho = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)  # prompt frequencies
    data["weight"] = data["weight"] * (rho * 4)[data["prompt"]]
    policy = TabularPolicy(4, 4, env.ref_logp.float())
    fit_tabular(policy, "pmpo", data, hparams={"alpha": 0.5, "beta": 1.0}, inputs={"kl": exact_kl},
                reference=env.ref_logp.float(), steps=20, lr=1.0, optimizer="lbfgs")
    target, collapsed = pmpo_target(env.ref_probs, env.accept_probability(w), alpha=0.5, beta=1.0)
    assert not collapsed.any()
    assert tv_distance(policy.probs().detach().double(), target) < 1e-4

    def per_class_form(env, alpha, beta):
        ref, p = env.ref_probs, env.accept_probability(w)
        up, down = (ref * p).sum(-1), (ref * (1 - p)).sum(-1)
        c = (alpha * (up / up.sum())[:, None] * env.positive_posterior(w)
             - (1 - alpha) * (down / down.sum())[:, None] * env.negative_posterior(w) + beta * ref / ref.shape[0])
        return None if (c < 0).any() else c / c.sum(-1, keepdim=True)

    gaps = []
    for seed in range(5):
        for size in ((8, 6), (4, 4)):
            grid_env = ExactEnv(*size, 2, beta=1.0, seed=seed)
            for alpha, beta in ((0.5, 1.0), (0.5, 0.6), (0.8, 0.3)):
                other = per_class_form(grid_env, alpha, beta)
                if other is not None:
                    mine = grid_env.pmpo_optimum(w, alpha=alpha, beta=beta)[0]
                    gaps.append(tv_distance(mine, other))
    assert 0.05 < max(gaps) < 0.15 and min(gaps) > 0.005
