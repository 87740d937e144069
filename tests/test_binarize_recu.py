"""Training-side binarization (edgepack.compress.binarize_recu): ReCU (Xu et al., ICCV 2021) and sign + STE."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgepack.compress.binarize_recu import (BinaryConv2d, BinaryLinear, TauSchedule, act_std_norm, binarize,
                                             binary_layers, export_ready, quantile_clamp, recu_bounds, set_tau,
                                             sign_approx, sign_ste, standardize_weight, train_binary)


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


# ---- official-recipe options: ApproxSign, act_norm, learned alpha -----------------------------------------
def approxsign_F(x):
    """Bi-Real's ApproxSign: 2x - x|x| for |x| <= 1, sign(x) outside (its derivative is max(0, 2 - 2|x|))."""
    return torch.where(x.abs() <= 1, 2 * x - x * x.abs(), torch.sign(x))


def test_approxsign_forward_and_gradient_numerically():
    x = torch.tensor([-2.0, -1.0, -0.75, -0.3, -1e-3, 0.0, 0.2, 0.5, 0.999, 1.0, 1.7], dtype=torch.float64,
                     requires_grad=True)
    y = sign_approx(x)
    assert y.tolist() == [-1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1]  # the forward is sign, sign(0) = +1
    y.sum().backward()
    assert torch.allclose(x.grad, (2 - 2 * x.detach().abs()).clamp_min(0))
    # central differences of the smooth surrogate F away from its kinks (0 and +-1)
    h = 1e-6
    for v in (-1.5, -0.75, -0.3, 0.2, 0.5, 0.9, 1.7):
        xv = torch.tensor([v], dtype=torch.float64, requires_grad=True)
        sign_approx(xv).sum().backward()
        num = (approxsign_F(torch.tensor(v + h, dtype=torch.float64))
               - approxsign_F(torch.tensor(v - h, dtype=torch.float64))) / (2 * h)
        assert float(xv.grad) == pytest.approx(float(num), abs=1e-6)


def test_act_std_norm_matches_formula_and_keeps_sign():
    torch.manual_seed(4)
    x = (torch.randn(3, 4, 5, 5) * torch.tensor([0.3, 1.0, 4.0]).reshape(3, 1, 1, 1)).double()
    x[0, 0, 0, 0] = 0.0
    x.requires_grad_(True)
    y = act_std_norm(x)
    h = x.detach().clamp(-1, 1)
    ref = h / torch.sqrt(h.var(dim=(1, 2, 3), keepdim=True) + 1e-5)
    assert torch.allclose(y, ref)
    assert torch.equal(y >= 0, x >= 0)
    assert torch.autograd.gradcheck(act_std_norm, (x[:, :1, :3, :3].detach().clone().requires_grad_(True),))


@pytest.mark.parametrize("act_norm", [False, True])
def test_approxsign_layer_gradient(act_norm):
    torch.manual_seed(5)
    m = BinaryConv2d(3, 4, 3, padding=1, method="recu", tau=0.9, act_grad="approxsign", act_norm=act_norm).double()
    x = (torch.randn(2, 3, 6, 6, dtype=torch.float64) * 0.7).requires_grad_(True)
    m.train()
    m(x).square().sum().backward()
    # the same layer by hand: sign with the ApproxSign surrogate's gradient, on act_std_norm(x) if act_norm
    x2 = x.detach().clone().requires_grad_(True)
    a0 = act_std_norm(x2) if act_norm else x2
    xb = approxsign_F(a0) + (torch.where(a0 >= 0, 1.0, -1.0) - approxsign_F(a0)).detach()
    torch.nn.functional.conv2d(xb, m.binary_weight().detach(), m.bias.detach(), padding=1).square().sum().backward()
    assert torch.allclose(x.grad, x2.grad)
    # the forward is the same in train and eval mode and equals the plain sign layer's
    m.eval()
    with torch.no_grad():
        y_eval = m(x)
        m.train()
        assert torch.equal(m(x), y_eval)


def test_options_are_checked_and_ste_has_no_recu_parts():
    # STE shares the activation path (act_grad, act_norm, threshold, scale) so that ReCU vs STE compares ReCU's
    # own weight parts on one recipe; those parts (standardization, clamp) are refused for STE
    for kw in (dict(standardize=True), dict(clamp=True)):
        with pytest.raises(ValueError):
            BinaryConv2d(2, 2, 3, method="ste", **kw)
        with pytest.raises(ValueError):
            binarize(Net(), method="ste", example_input=X, **kw)
    m = BinaryConv2d(2, 2, 3, method="ste", act_grad="approxsign", act_norm=True, act_threshold="learned")
    assert (m.standardize, m.clamp) == (False, False)
    r = BinaryConv2d(2, 2, 3, method="recu", clamp=False)
    assert (r.standardize, r.clamp) == (True, False)
    with pytest.raises(ValueError):
        BinaryLinear(2, 2, act_grad="tanh")
    with pytest.raises(ValueError):
        BinaryLinear(2, 2, scale="mean")
    with pytest.raises(ValueError):
        BinaryLinear(2, 2, act_threshold="fixed")


def test_learned_alpha_parameter_and_gradient():
    torch.manual_seed(6)
    m = BinaryConv2d(3, 5, 3, padding=1, bias=False, method="recu", tau=0.9, scale="learned")
    assert isinstance(m.learned_alpha, nn.Parameter) and m.learned_alpha.shape == (5,)
    assert any(p is m.learned_alpha for p in m.parameters())
    assert ((m.learned_alpha >= 0) & (m.learned_alpha < 1)).all()  # U(0, 1), as the official torch.rand
    x = torch.randn(2, 3, 5, 5)
    y = m(x)
    # the official form: the +-1 conv's output times alpha_c
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0),
                                         torch.where(m.latent_weight() >= 0, 1.0, -1.0), padding=1)
        ref = ref * m.learned_alpha.reshape(1, -1, 1, 1)
    assert torch.allclose(y, ref, atol=1e-5)
    y.sum().backward()
    assert torch.allclose(m.learned_alpha.grad, (ref / m.learned_alpha.detach().reshape(1, -1, 1, 1)).sum((0, 2, 3)),
                          atol=1e-4)
    assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("act_norm", [False, True])
def test_export_learned_alpha_two_values_and_same_outputs(act_norm):
    torch.manual_seed(7)
    m, names = binarize(randomise_bn(Net()), example_input=X, quantile="laplace", act_grad="approxsign",
                        scale="learned", act_norm=act_norm)
    with torch.no_grad():  # some negative, some large, one tiny learned scale
        m.c1.learned_alpha.copy_(torch.linspace(-1.5, 2.0, 12))
        m.c2.learned_alpha[3] = 0.0
    set_tau(m, 0.95)
    m.eval()
    x = torch.randn(4, 1, 16, 16)
    dep = export_ready(m)
    with torch.no_grad():
        assert torch.allclose(dep(x), m(x), atol=1e-5)
    infos = {d["name"]: d for d in binary_layers(dep)}
    train_infos = {d["name"]: d for d in binary_layers(m)}
    for name in names:
        layer = m.get_submodule(name)
        W = dep.get_submodule(name).weight
        a = infos[name]["alpha"]
        np.testing.assert_allclose(a, train_infos[name]["alpha"], rtol=1e-6)
        with torch.no_grad():
            alpha = layer.alpha()
            np.testing.assert_allclose(a, alpha.abs().numpy(), rtol=1e-6)
            wl = layer.latent_weight()
        assert (a > 0).all()
        for c in range(W.shape[0]):
            vals = set(W[c].unique().tolist())
            assert vals == {float(a[c]), -float(a[c])}, (name, c, vals)
            # W = alpha_c * sign(w'), the learned alpha folded in (negative alpha flips the row)
            s = 1.0 if float(alpha[c]) > 0 else -1.0
            assert torch.equal(W[c] * s > 0, wl[c] >= 0)
    ep = torch.export.export(dep, (x[:1],))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("aten.sign.default") == 3
    with torch.no_grad():
        assert torch.allclose(ep.module()(x[:1]), m(x[:1]), atol=1e-5)


def test_train_binary_official_recipe_tiny():
    torch.manual_seed(0)
    x = torch.randn(96, 1, 16, 16).numpy()
    y = (x.reshape(96, -1)[:, :128].mean(1) > 0).astype(np.int64) * 4
    m, _ = binarize(Net(), example_input=X, quantile="laplace", act_grad="approxsign", scale="learned",
                    act_norm=True)
    a0 = m.c1.learned_alpha.detach().clone()
    train_binary(m, x, y, epochs=2, batch=32, lr=1e-2, seed=0, progress=False)
    assert not m.training and float(m.c1.tau) == pytest.approx(0.99)
    assert not torch.equal(m.c1.learned_alpha.detach(), a0)  # the scale is trained
    dep = export_ready(m)
    with torch.no_grad():
        assert torch.allclose(dep(torch.from_numpy(x[:8])), m(torch.from_numpy(x[:8])), atol=1e-5)


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


def test_reestimate_bn_takes_each_layers_statistics_with_the_layers_before_in_eval_mode():
    """reestimate_bn (train_binary's last step): every BatchNorm's running mean becomes the mean of its input over
    the data, computed with the BatchNorms before it already re-estimated and in eval mode; weights untouched."""
    from edgepack.compress.binarize_recu import reestimate_bn

    torch.manual_seed(0)
    x = torch.randn(256, 3, 8, 8) * 2 + 1
    y = torch.zeros(256, dtype=torch.int64)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5))
    for bn in (m[1], m[4]):
        bn.running_mean.fill_(100.0)
        bn.running_var.fill_(1e-3)
    weights = {k: v.clone() for k, v in m.state_dict().items() if "running" not in k and "num_batches" not in k}
    m.train()
    assert reestimate_bn(m, (x, y), batch=64) == 2
    assert m.training  # the mode it had
    m.eval()
    with torch.no_grad():
        h0 = m[0](x)
        assert torch.allclose(m[1].running_mean, h0.mean((0, 2, 3)), atol=1e-4)
        h1 = m[3](m[2](m[1](h0)))  # the first BN in eval mode, with its new statistics
        assert torch.allclose(m[4].running_mean, h1.mean((0, 2, 3)), atol=1e-4)
        assert torch.allclose(m[4].running_var, h1.transpose(0, 1).reshape(5, -1).var(1), rtol=0.05)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in weights.items())
