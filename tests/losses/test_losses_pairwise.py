import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from feedalign.losses import get_loss


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def logsig(z):
    return -math.log1p(math.exp(-z))


# pc=-1, pr=-2, rc=rr=-1.5: h = 0.5 - (-0.5) = 1
PAIR = (t(-1.0), t(-2.0), t(-1.5), t(-1.5))


def test_dpo_hand_worked():
    losses, metrics = get_loss("dpo").fn(*PAIR, beta=0.5)
    assert losses.item() == pytest.approx(-logsig(0.5), abs=1e-12)
    assert metrics["rewards/margins"].item() == pytest.approx(0.5)
    assert metrics["rewards/accuracies"].item() == 1.0


def test_ipo_hand_worked_and_length_normalisation():
    losses, _ = get_loss("ipo").fn(*PAIR, beta=0.25)
    assert losses.item() == pytest.approx((1.0 - 2.0) ** 2)
    # per-token mean: h = 0.5/2 - (-0.5)/1 = 0.75 -> (0.75 - 2)^2
    losses, _ = get_loss("ipo").fn(
        *PAIR, beta=0.25, length_normalize=True, chosen_lengths=t(2.0), rejected_lengths=t(1.0)
    )
    assert losses.item() == pytest.approx(1.25**2)
    with pytest.raises(ValueError, match="lengths"):
        get_loss("ipo").fn(*PAIR, beta=0.25, length_normalize=True)


def test_cdpo_and_rdpo_hand_worked():
    cdpo, _ = get_loss("cdpo").fn(*PAIR, beta=0.5, epsilon=0.2)
    assert cdpo.item() == pytest.approx(-0.8 * logsig(0.5) - 0.2 * logsig(-0.5))
    rdpo, _ = get_loss("rdpo").fn(*PAIR, beta=0.5, epsilon=0.2)
    assert rdpo.item() == pytest.approx((-0.8 * logsig(0.5) + 0.2 * logsig(-0.5)) / 0.6)


@settings(max_examples=50, deadline=None)
@given(h=st.floats(-20, 20), eps=st.floats(0.0, 0.45), beta=st.floats(0.01, 2.0))
def test_rdpo_is_unbiased_for_dpo(h, eps, beta):
    """E over flips (rate eps) of the rDPO loss equals the clean DPO loss (ALGORITHMS.md §6.2)."""
    zero = t(0.0)
    clean = get_loss("dpo").fn(t(h), zero, zero, zero, beta=beta)[0]
    kept = get_loss("rdpo").fn(t(h), zero, zero, zero, beta=beta, epsilon=eps)[0]
    flipped = get_loss("rdpo").fn(zero, t(h), zero, zero, beta=beta, epsilon=eps)[0]
    assert ((1 - eps) * kept + eps * flipped).item() == pytest.approx(clean.item(), rel=1e-9, abs=1e-9)


def test_cdpo_gradient_vanishes_at_shrunk_preference():
    eps, beta = 0.2, 1.0
    h = math.log((1 - eps) / eps)  # sigma(beta*h) = 1 - eps
    pc = t(h).requires_grad_()
    loss = get_loss("cdpo").fn(pc, t(0.0), t(0.0), t(0.0), beta=beta, epsilon=eps)[0].sum()
    loss.backward()
    assert abs(pc.grad.item()) < 1e-12


@pytest.mark.parametrize("name", ["dpo", "cdpo", "rdpo", "ipo"])
def test_gradient_pushes_chosen_up_and_rejected_down(name):
    pc, pr = t(-3.0).requires_grad_(), t(-3.0).requires_grad_()
    loss = get_loss(name).fn(pc, pr, t(-3.0), t(-3.0), beta=0.1)[0].sum()
    loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()


def _closed_form(name, h, beta, eps=0.1):
    z = beta * h
    if name == "dpo":
        return -logsig(z)
    if name == "cdpo":
        return -(1 - eps) * logsig(z) - eps * logsig(-z)
    if name == "rdpo":
        return (-(1 - eps) * logsig(z) + eps * logsig(-z)) / (1 - 2 * eps)
    return (h - 1 / (2 * beta)) ** 2  # ipo, tau = beta


@pytest.mark.parametrize("name", ["dpo", "cdpo", "rdpo", "ipo"])
def test_per_example_loss_and_gradient_match_the_closed_form_on_random_batches(name):
    """Each example's loss is the formula of its own log-ratios (no batch coupling), and the
    gradient wrt the policy's chosen log-prob is d loss / d h (ALGORITHMS.md §4-§6)."""
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(8, generator=g, dtype=torch.float64) for _ in range(4))
    pc.requires_grad_()
    beta = 0.7
    losses, _ = get_loss(name).fn(pc, pr, rc, rr, beta=beta)
    h = ((pc - rc) - (pr - rr)).detach()
    expected = [_closed_form(name, v, beta) for v in h.tolist()]
    assert losses.tolist() == pytest.approx(expected, rel=1e-10)
    losses.sum().backward()
    step = 1e-6
    numeric = [(_closed_form(name, v + step, beta) - _closed_form(name, v - step, beta)) / (2 * step)
               for v in h.tolist()]
    assert pc.grad.tolist() == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    shuffled = torch.randperm(8, generator=g)
    again, _ = get_loss(name).fn(pc.detach()[shuffled], pr[shuffled], rc[shuffled], rr[shuffled], beta=beta)
    assert torch.equal(again, losses.detach()[shuffled])


def test_dpo_reference_free_means_uniform_reference():
    with_none = get_loss("dpo").fn(t(-1.0), t(-2.0), None, None, beta=0.3)[0]
    with_zero = get_loss("dpo").fn(t(-1.0), t(-2.0), t(0.0), t(0.0), beta=0.3)[0]
    assert torch.equal(with_none, with_zero)
