"""The frozen-head fused path (gradient formed in the forward) equals the recomputing
chunked path and the naive full-logits computation, values and hidden-state gradients."""

import pytest
import torch

from feedalign.policies import fused_logps
from feedalign.policies.chunked_logps import linear_target_logps
from feedalign.policies.fused_logps import frozen_head_target_logps


def naive(hidden, weight, bias, targets, scale=1.0, softcap=None):
    logits = (hidden @ weight.T + (0 if bias is None else bias)) * scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)


def _inputs(dtype=torch.float32, seed=0, n=9, h=6, v=17, bias=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, dtype=dtype)
    b = torch.randn(v, generator=gen, dtype=dtype) if bias else None
    return hidden, weight, b, torch.randint(0, v, (n,), generator=gen)


@pytest.mark.parametrize("scale,softcap,bias", [(1.0, None, False), (0.5, 1.5, True), (2.0, None, True)])
def test_gradcheck(scale, softcap, bias):
    hidden, weight, b, targets = _inputs(torch.float64, bias=bias)

    def fn(h):
        return frozen_head_target_logps(h, weight, b, targets, chunk_size=4, scale=scale, softcap=softcap)

    assert torch.autograd.gradcheck(fn, (hidden,), eps=1e-3, atol=5e-3, rtol=5e-3)
    torch.testing.assert_close(fn(hidden).double(), naive(hidden, weight, b, targets, scale, softcap))


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_equals_recomputing_path_and_naive(softcap):
    hidden, weight, b, targets = _inputs(seed=1)
    upstream = torch.linspace(-1.0, 2.0, hidden.shape[0])
    results = []
    for fn in (
        lambda h: linear_target_logps(h, weight, b, targets, chunk_size=4, softcap=softcap),
        lambda h: linear_target_logps(h, weight, b, targets, chunk_size=4, softcap=softcap, fused_frozen_head=False),
        lambda h: naive(h, weight, b, targets, softcap=softcap),
    ):
        h = hidden.detach().clone().requires_grad_(True)
        out = fn(h)
        (grad,) = torch.autograd.grad((out * upstream).sum(), h)
        results.append((out.detach(), grad))
    for out, grad in results[1:]:
        torch.testing.assert_close(results[0][0], out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(results[0][1], grad, rtol=1e-5, atol=1e-5)


def test_frozen_head_picks_the_fused_path_and_trained_head_does_not(monkeypatch):
    calls = []
    real = fused_logps.FrozenHeadTargetLogProb.forward

    def spy(ctx, *args):
        calls.append(1)
        return real(ctx, *args)

    monkeypatch.setattr(fused_logps.FrozenHeadTargetLogProb, "forward", staticmethod(spy))
    hidden, weight, b, targets = _inputs(seed=2)
    linear_target_logps(hidden, weight, b, targets).sum().backward()
    assert calls == [1]
    weight.requires_grad_(True)
    linear_target_logps(hidden, weight, b, targets).sum().backward()
    assert calls == [1] and weight.grad is not None
    with pytest.raises(ValueError, match="must not require grad"):
        frozen_head_target_logps(hidden, weight, b, targets)
