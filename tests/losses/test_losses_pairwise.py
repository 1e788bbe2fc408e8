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


@pytest.mark.parametrize("name", ["dpo", "cdpo", "rdpo", "ipo"])
def test_reference_carries_no_gradient_and_reduction_is_microbatch_invariant(name):
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(8, generator=g, dtype=torch.float64) for _ in range(4))
    rc.requires_grad_()
    fn = get_loss(name).fn
    full = fn(pc, pr, rc.detach(), rr, beta=0.1)[0].mean()
    halves = [fn(pc[s], pr[s], rc.detach()[s], rr[s], beta=0.1)[0].mean() for s in (slice(0, 4), slice(4, 8))]
    assert full.item() == pytest.approx(sum(halves).item() / 2)


def test_dpo_reference_free_means_uniform_reference():
    with_none = get_loss("dpo").fn(t(-1.0), t(-2.0), None, None, beta=0.3)[0]
    with_zero = get_loss("dpo").fn(t(-1.0), t(-2.0), t(0.0), t(0.0), beta=0.3)[0]
    assert torch.equal(with_none, with_zero)
