import math

import pytest
import torch

from feedalign.losses import get_loss, list_losses, register_loss


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def logsig(z):
    return -math.log1p(math.exp(-z))


def test_modpo_hand_worked():
    losses, metrics = get_loss("modpo").fn(
        t(0.0), t(-1.0), t(-1.0), t(-1.0),
        chosen_margins=t(0.5)[:, None], rejected_margins=t(0.0)[:, None],
        beta=1.0, weight=0.5, margin_weights=(0.5,),
    )
    # (beta*h - w_-k * dm) / w_k = (1 - 0.25) / 0.5 = 1.5
    assert losses.item() == pytest.approx(-logsig(1.5))
    assert metrics["margins/other_objectives"].item() == pytest.approx(0.25)


def test_modpo_reduces_to_dpo_with_unit_weight_and_no_margin_weight():
    args = (t(-1.0, -2.0), t(-2.0, -1.0), t(-1.5, -1.5), t(-1.2, -1.9))
    modpo = get_loss("modpo").fn(
        *args, chosen_margins=t(3.0, 1.0), rejected_margins=t(0.0, 2.0), beta=0.2, weight=1.0, margin_weights=(0.0,)
    )[0]
    dpo = get_loss("dpo").fn(*args, beta=0.2)[0]
    assert torch.allclose(modpo, dpo)


def test_modpo_per_example_weights_and_detached_margins():
    margins = t(1.0, 2.0).requires_grad_()
    losses, _ = get_loss("modpo").fn(
        t(0.0, 0.0).requires_grad_(), t(0.0, 0.0), t(0.0, 0.0), t(0.0, 0.0),
        chosen_margins=margins, rejected_margins=t(0.0, 0.0),
        weight=t(0.5, 0.25), margin_weights=t(0.5, 0.75)[:, None],
    )
    assert losses.tolist() == pytest.approx([-logsig(-1.0), -logsig(-6.0)])
    losses.sum().backward()
    assert margins.grad is None
    with pytest.raises(ValueError, match="w_k"):
        get_loss("modpo").fn(
            t(0.0), t(0.0), t(0.0), t(0.0), chosen_margins=t(0.0), rejected_margins=t(0.0), weight=0.0
        )


def test_modpo_at_the_scalarised_optimum_is_the_bt_loss_of_the_trained_objective():
    """With pi = pi*_w and exact margins, MODPO's logit is r_k(y_w) - r_k(y_l): its loss on every
    pair is the Bradley-Terry NLL of objective k, so pi*_w is its population optimum (§10)."""
    g = torch.Generator().manual_seed(1)
    r = torch.randn(6, 2, generator=g, dtype=torch.float64)  # 6 responses, 2 objectives
    ref_logp = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    w, beta = t(0.3, 0.7), 0.5
    star_logp = torch.log_softmax(ref_logp + (r @ w) / beta, 0)
    chosen, rejected = torch.triu_indices(6, 6, offset=1)
    losses, _ = get_loss("modpo").fn(
        star_logp[chosen], star_logp[rejected], ref_logp[chosen], ref_logp[rejected],
        chosen_margins=r[chosen, 1:], rejected_margins=r[rejected, 1:], beta=beta,
        weight=float(w[0]), margin_weights=(float(w[1]),),
    )
    bt = -torch.nn.functional.logsigmoid(r[chosen, 0] - r[rejected, 0])
    assert torch.allclose(losses, bt, atol=1e-12)
    # a wrong weight (w_k of the other objective) breaks it
    wrong, _ = get_loss("modpo").fn(
        star_logp[chosen], star_logp[rejected], ref_logp[chosen], ref_logp[rejected],
        chosen_margins=r[chosen, 1:], rejected_margins=r[rejected, 1:], beta=beta, weight=0.7, margin_weights=(0.3,),
    )
    assert not torch.allclose(wrong, bt, atol=1e-3)


def test_reward_losses_hand_worked():
    bt, metrics = get_loss("bt_reward").fn(t(1.0), t(0.0), center_coef=0.01)
    assert bt.item() == pytest.approx(-logsig(1.0) + 0.01)
    assert metrics["rewards/accuracies"].item() == 1.0
    bce, _ = get_loss("bce_reward").fn(t(1.0, 1.0), torch.tensor([True, False]))
    assert bce.tolist() == pytest.approx([-logsig(1.0), -logsig(-1.0)])


def test_bce_reward_population_optimum_is_logit_of_acceptance():
    """At the optimum f = logit(p) = r - c(x): the offset cancels in pi* (§2.2)."""
    p = torch.tensor(0.8, dtype=torch.float64)
    f = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [f], max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        pos = get_loss("bce_reward").fn(f[None], torch.tensor([True]))[0]
        neg = get_loss("bce_reward").fn(f[None], torch.tensor([False]))[0]
        loss = (p * pos + (1 - p) * neg).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert f.item() == pytest.approx(math.log(0.8 / 0.2), abs=1e-6)


def test_registry_errors():
    with pytest.raises(KeyError, match="valid"):
        get_loss("dop")
    with pytest.raises(ValueError, match="already registered"):
        register_loss("dpo", feedback="pair", needs_reference=True)(lambda *a, **k: None)
    with pytest.raises(ValueError, match="feedback"):
        register_loss("x", feedback="nonsense", needs_reference=True)
    assert {"dpo", "ipo", "cdpo", "rdpo", "kto", "bco", "pmpo", "modpo", "sft", "bt_reward", "bce_reward"} <= set(
        list_losses()
    )


def test_modpo_scale_by_weight_multiplies_each_example_by_its_w_k():
    kwargs = dict(chosen_margins=t(1.0, 0.5), rejected_margins=t(0.0, 0.0), weight=t(0.2, 0.8),
                  margin_weights=t(0.8, 0.2)[:, None])
    args = (t(-1.0, -2.0), t(-2.0, -1.0), t(-1.5, -1.5), t(-1.2, -1.9))
    plain = get_loss("modpo").fn(*args, **kwargs)[0]
    scaled = get_loss("modpo").fn(*args, **kwargs, scale_by_weight=True)[0]
    assert torch.allclose(scaled, plain * t(0.2, 0.8))
