"""The compressibility loss (Aytekin et al. 2019): its value and gradient, the paper's theorem (gradient descent on
the loss alone ends at a ternary vector whose loss is sqrt(nonzeros)), and its use on a model."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgepack.compress.losses import compressibility, compressibility_loss


def _descend(w, steps=5000):
    w = w.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=0.02)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=1e-4 ** (1 / steps))
    for _ in range(steps):
        opt.zero_grad()
        compressibility(w).backward()
        opt.step()
        sched.step()
    return w.detach()


def _ternary(w, rel=1e-3):
    v = w.abs()
    a = v.max()
    support = v > rel * a
    return support, v[support], a


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_descent_from_a_random_vector_ends_ternary(seed):
    w = _descend(torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    support, mags, a = _ternary(w)
    assert torch.allclose(mags, a.expand_as(mags), rtol=1e-4)       # one magnitude on the support
    assert float(torch.cat([w[~support].abs(), torch.zeros(1, dtype=w.dtype)]).max()) < 1e-5 * float(a)  # the rest is 0
    assert float(compressibility(w)) == pytest.approx(math.sqrt(int(support.sum())), rel=1e-4)


@pytest.mark.parametrize("k", [2, 5, 9])
def test_descent_keeps_k_tied_weights_and_ends_at_sqrt_k(k):
    """From k equal-magnitude weights (random signs) plus small noise, descent ends ternary with k nonzeros:
    loss sqrt(k), a critical point that is not the global minimum (1), as the theorem allows."""
    gen = torch.Generator().manual_seed(k)
    w = 0.05 * torch.randn(30, dtype=torch.float64, generator=gen)
    idx = torch.randperm(30, generator=gen)[:k]
    w[idx] = 2.0 * torch.where(torch.rand(k, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0).double()
    w = _descend(w)
    support, mags, a = _ternary(w)
    assert int(support.sum()) == k and set(torch.nonzero(support).reshape(-1).tolist()) == set(idx.tolist())
    assert torch.allclose(mags, a.expand_as(mags), rtol=1e-6)
    assert float(compressibility(w)) == pytest.approx(math.sqrt(k), rel=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.floats(0.1, 10.0))
def test_ternary_points_are_critical(n_nonzero, n_zero, a):
    w = torch.zeros(n_nonzero + n_zero, dtype=torch.float64)
    w[:n_nonzero] = a * torch.where(torch.arange(n_nonzero) % 2 == 0, 1.0, -1.0).double()
    w.requires_grad_(True)
    c = compressibility(w)
    (g,) = torch.autograd.grad(c, w)
    assert float(c) == pytest.approx(math.sqrt(n_nonzero))
    assert float(g[:n_nonzero].abs().max()) < 1e-9  # zero gradient on the support (up to the 1e-12 guard)


def test_value_gradient_and_scale_invariance():
    w = torch.tensor([3.0, -4.0, 0.0], dtype=torch.float64, requires_grad=True)
    c = compressibility(w)
    assert float(c) == pytest.approx(7 / 5)
    (g,) = torch.autograd.grad(c, w)
    want = np.sign([3, -4, 0]) / 5 - 7 * np.array([3, -4, 0]) / 125
    np.testing.assert_allclose(g.numpy(), want)
    assert float(compressibility(10 * w.detach())) == pytest.approx(7 / 5)
    v = torch.randn(6, 4)
    assert float(compressibility(v, "channel")) == pytest.approx(
        sum(float(compressibility(r)) for r in v), rel=1e-6)


def test_model_loss_sums_the_layers():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    want = float(compressibility(m[0].weight) + compressibility(m[4].weight))
    assert float(compressibility_loss(m, 0.5)) == pytest.approx(0.5 * want, rel=1e-6)
    assert float(compressibility_loss(m, 1.0, skip=("4",))) == pytest.approx(float(compressibility(m[0].weight)))
    assert float(compressibility_loss(m[0])) == pytest.approx(float(compressibility(m[0].weight)))
    loss = compressibility_loss(m, 1e-2)
    loss.backward()
    assert m[0].weight.grad is not None and m[1].weight.grad is None  # batchnorm is not a weight layer
    with pytest.raises(ValueError):
        compressibility_loss(nn.ReLU())
