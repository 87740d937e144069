"""Training-side binarization (edgepack.compress.binarize_recu): ReCU (Xu et al., ICCV 2021) and sign + STE."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgepack.compress.binarize_recu import (BinaryConv2d, BinaryLinear, TauSchedule, binarize, binary_layers,
                                             export_ready, quantile_clamp, recu_bounds, set_tau, sign_ste,
                                             standardize_weight, train_binary)


class Net(nn.Module):
    """int8-style first conv + BN, two binary-able convs + BN, a binary-able linear, a last linear. The modules
    are registered in an order different from the execution order (fc_out first, stem last)."""

    def __init__(self):
        super().__init__()
        self.fc_out = nn.Linear(24, 5)
        self.fc_mid = nn.Linear(16 * 4 * 4, 24)
        self.c1 = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.c2 = nn.Conv2d(12, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.bn0(self.stem(x))
        x = x + self.dw(x)
        x = self.bn2(self.c2(self.bn1(self.c1(x))))
        x = self.fc_mid(x.flatten(1))
        return self.fc_out(torch.relu(x))


def randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


X = torch.randn(1, 1, 16, 16)


def laplace(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(shape, generator=g) - 0.5
    return -torch.sign(u) * torch.log1p(-2 * u.abs()) * 0.05 + 0.01


# ---- weight path ----------------------------------------------------------------------------------------
def test_standardize_weight_per_channel():
    w = laplace((16, 8, 3, 3)) * torch.linspace(10, 300, 16).reshape(-1, 1, 1, 1) + 0.7
    s = standardize_weight(w)
    assert torch.allclose(s.mean(dim=(1, 2, 3)), torch.zeros(16), atol=1e-5)
    assert torch.allclose(s.std(dim=(1, 2, 3)), torch.ones(16), atol=1e-3)
    w0 = w - w.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(s, w0 / torch.sqrt(w0.var(dim=(1, 2, 3), keepdim=True) + 1e-5))


@pytest.mark.parametrize("tau", [0.75, 0.85, 0.9, 0.97, 0.99])
def test_quantile_clamp_fraction_at_bounds(tau):
    w = standardize_weight(laplace((64, 32, 3, 3), seed=1))
    lo, hi = recu_bounds(w, tau)
    c = quantile_clamp(w, tau)
    n = w.numel()
    assert c.min() == lo and c.max() == hi and lo < 0 < hi
    assert abs(float((c == hi).sum()) / n - (1 - tau)) < 1e-3 + 2 / n
    assert abs(float((c == lo).sum()) / n - (1 - tau)) < 1e-3 + 2 / n
    inside = (w > lo) & (w < hi)
    assert torch.equal(c[inside], w[inside])
    # the clamp never changes a sign
    assert torch.equal(c >= 0, w >= 0)


def test_laplace_quantile_estimate_matches_empirical_on_laplace_weights():
    w = standardize_weight(laplace((128, 64, 3, 3), seed=2))
    for tau in (0.85, 0.95):
        lo, hi = recu_bounds(w, tau, "laplace")
        b = float(w.abs().mean())
        assert hi == pytest.approx(-b * math.log(2 - 2 * tau)) and lo == -hi
        elo, ehi = recu_bounds(w, tau, "empirical")
        assert hi == pytest.approx(ehi, rel=0.05) and lo == pytest.approx(elo, rel=0.05)
    assert recu_bounds(w, 1.0, "laplace") == (-math.inf, math.inf)
    with pytest.raises(ValueError):
        recu_bounds(w, 0.3)


def test_tau_schedule():
    s = TauSchedule(0.85, 0.99, total_steps=100)
    assert s(0) == pytest.approx(0.85, abs=1e-12) and s(100) == pytest.approx(0.99, abs=1e-12)
    vals = [s(t) for t in range(101)]
    assert all(b > a for a, b in zip(vals, vals[1:]))
    steps = np.diff(vals)
    assert all(b > a for a, b in zip(steps, steps[1:]))  # exponential: slow first, faster later
    A = (0.99 - 0.85) / (math.e - 1)
    assert s(37) == pytest.approx(A * math.exp(0.37) + 0.85 - A)
    assert s(-5) == s(0) and s(500) == s(100)


# ---- STE -------------------------------------------------------------------------------------------------
def test_activation_sign_and_ste():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]  # sign(0) = +1
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("method", ["recu", "ste"])
def test_weight_gradients_flow(method):
    torch.manual_seed(0)
    m = BinaryConv2d(4, 6, 3, padding=1, method=method, tau=0.9)
    x = torch.randn(2, 4, 5, 5) * 0.5
    m(x).square().sum().backward()
    assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    assert torch.isfinite(m.weight.grad).all()


def test_weight_ste_is_identity_through_sign():
    # identity STE on the weight sign: d/dw' of sum(g * alpha * sign(w')) ignoring alpha is alpha * g
    lin = BinaryLinear(3, 2, bias=False, method="ste")
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.2, 0.0], [-1.0, 2.0, 3.0]]))
    w = lin.binary_weight()
    assert torch.allclose(w, torch.tensor([[0.7 / 3, -0.7 / 3, 0.7 / 3], [-2.0, 2.0, 2.0]]))
    w.sum().backward()
    # d/dw [a * sign(w)] summed = a * 1 (STE) + sum(sign) * d a/dw, with a = mean |w|
    expected = torch.tensor([[0.7 / 3 + 1 / 3, 0.7 / 3 - 1 / 3, 0.7 / 3 + 0.0], [2 - 1 / 3, 2 + 1 / 3, 2 + 1 / 3]])
    assert torch.allclose(lin.weight.grad, expected, atol=1e-6)


def test_alpha_per_channel():
    torch.manual_seed(1)
    for method in ("recu", "ste"):
        m = BinaryConv2d(5, 7, 3, method=method, tau=0.9)
        with torch.no_grad():
            m.weight.mul_(torch.linspace(0.2, 5, 7).reshape(-1, 1, 1, 1))
            wb = m.binary_weight()
        if method == "ste":
            ref = m.weight.detach().abs().mean(dim=(1, 2, 3))
        else:
            ref = quantile_clamp(standardize_weight(m.weight.detach()), 0.9).abs().mean(dim=(1, 2, 3))
        assert torch.allclose(m.alpha(), ref)
        for c in range(7):
            assert set(wb[c].abs().unique().tolist()) == pytest.approx([float(ref[c])])
            assert torch.equal(wb[c] > 0, m.latent_weight()[c] >= 0)
    with pytest.raises(ValueError):
        BinaryConv2d(1, 1, 1, method="xnor")


# ---- surgery --------------------------------------------------------------------------------------------
def test_binarize_skips_first_and_last_in_execution_order():
    m, names = binarize(Net(), example_input=X)
    assert names == ["c1", "c2", "fc_mid"]  # stem first, fc_out last; dw (grouped) stays
    assert isinstance(m.c1, BinaryConv2d) and isinstance(m.fc_mid, BinaryLinear)
    assert type(m.stem) is nn.Conv2d and type(m.fc_out) is nn.Linear and type(m.dw) is nn.Conv2d
    # module order (no example input): first registered is fc_out, last is stem
    _, names = binarize(Net(), method="ste")
    assert names == ["fc_mid", "c1", "c2"]
    _, names = binarize(Net(), first_last_int8=False, skip=["c2"], example_input=X)
    assert names == ["stem", "c1", "fc_mid", "fc_out"]


def test_binarize_copies_weights():
    net = Net()
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    m, _ = binarize(net, example_input=X, tau=0.88)
    sd = m.state_dict()
    for k, v in ref.items():
        assert torch.equal(sd[k], v), k
    assert float(m.c1.tau) == pytest.approx(0.88)
    assert set_tau(m, 0.95) == 3 and float(m.fc_mid.tau) == pytest.approx(0.95)


# ---- deploy ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["recu", "ste"])
def test_export_ready_matches_and_exports(method):
    torch.manual_seed(3)
    m, names = binarize(randomise_bn(Net()), method=method, example_input=X)
    set_tau(m, 0.93)
    m.eval()
    x = torch.randn(4, 1, 16, 16)
    dep = export_ready(m)
    assert isinstance(m.c1, BinaryConv2d)  # the original is untouched
    with torch.no_grad():
        assert torch.allclose(dep(x), m(x), atol=1e-5)
    infos = {d["name"]: d for d in binary_layers(dep)}
    train_infos = {d["name"]: d for d in binary_layers(m)}
    assert sorted(infos) == sorted(names) == sorted(train_infos)
    for name in names:
        W = dep.get_submodule(name).weight
        a = infos[name]["alpha"]
        np.testing.assert_allclose(a, train_infos[name]["alpha"], rtol=1e-6)
        assert (a > 0).all()
        for c in range(W.shape[0]):
            vals = set(W[c].unique().tolist())
            assert vals <= {float(a[c]), -float(a[c])} and len(vals) == 2
    ep = torch.export.export(dep, (x[:1],))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("aten.sign.default") == 3
    with torch.no_grad():
        assert torch.allclose(ep.module()(x[:1]), m(x[:1]), atol=1e-5)


def test_train_binary_tiny():
    torch.manual_seed(0)
    x = torch.randn(96, 1, 16, 16).numpy()
    y = (x.reshape(96, -1)[:, :128].mean(1) > 0).astype(np.int64) * 4
    m, _ = binarize(Net(), example_input=X, tau=0.5)
    out = train_binary(m, x, y, epochs=2, batch=32, lr=1e-2, method=None, seed=0, progress=False,
                       tau_start=0.8, tau_end=0.97)
    assert out is m and not m.training
    assert float(m.c1.tau) == pytest.approx(0.97)
    m2, _ = binarize(Net(), example_input=X, method="ste")
    train_binary(m2, x, y, epochs=1, batch=32, lr=1e-2, seed=0, progress=False, sched="onecycle")
    assert not m2.training
