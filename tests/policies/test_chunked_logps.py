import pytest
import torch

from feedalign.policies.chunked_logps import linear_target_logps, module_target_logps


def reference(hidden, weight, bias, targets, scale=1.0, softcap=None):
    logits = (hidden @ weight.T + (0 if bias is None else bias)) * scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)


@pytest.mark.parametrize("scale,softcap,with_bias", [(1.0, None, False), (0.5, 1.5, True), (2.0, None, True)])
def test_gradcheck_against_finite_differences(scale, softcap, with_bias):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, generator=gen, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 11, (7,), generator=gen)

    def fn(h, w, *b):
        # fp32 softmax math inside: compare in float64 with fp32-level tolerances.
        return linear_target_logps(h, w, b[0] if b else None, targets, chunk_size=3, scale=scale, softcap=softcap)

    inputs = (hidden, weight) + ((bias,) if with_bias else ())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-3, atol=5e-3, rtol=5e-3)
    torch.testing.assert_close(fn(*inputs).double(), reference(hidden, weight, bias, targets, scale, softcap))


def test_frozen_weight_gets_no_gradient_and_module_path_agrees():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 4, generator=gen, requires_grad=True)
    head = torch.nn.Linear(4, 13)
    head.weight.requires_grad_(False)
    targets = torch.randint(0, 13, (9,), generator=gen)
    fast = linear_target_logps(hidden, head.weight, head.bias, targets, chunk_size=2, softcap=3.0)
    slow = module_target_logps(hidden, head, targets, chunk_size=4, softcap=3.0)
    torch.testing.assert_close(fast, slow)
    (g_fast,) = torch.autograd.grad(fast.sum(), hidden)
    (g_slow,) = torch.autograd.grad(slow.sum(), hidden)
    torch.testing.assert_close(g_fast, g_slow)
    assert head.weight.grad is None
    with torch.no_grad():
        assert not linear_target_logps(hidden, head.weight, None, targets).requires_grad
    with pytest.raises(ValueError, match="chunk_size"):
        linear_target_logps(hidden, head.weight, None, targets, chunk_size=0)


def test_empty_selection():
    hidden = torch.zeros(0, 4, requires_grad=True)
    out = linear_target_logps(hidden, torch.randn(6, 4), None, torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,) and out.dtype == torch.float32
