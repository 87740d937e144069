"""Symmetrical classifier layer (Kansizoglou et al., TNNLS 2022): polygon geometry, ArcFace margin loss,
gradients, the class-centre cosine helper, and export + edgepack build of a model ending in the head."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgepack.build import build
from edgepack.compress.symmetric_head import (ArcMarginLoss, CosineHead, SymmetricHead, class_centre_cosines,
                                              export_ready)
from edgepack.frontend import load_model
from edgepack.reference.float_exec import run_float_output
from edgepack.runners import Model, run


@pytest.mark.parametrize("fixed", [True, False])
@pytest.mark.parametrize("d,c", [(16, 10), (5, 3), (64, 7), (3, 2)])
def test_rows_are_a_regular_polygon(fixed, d, c):
    head = SymmetricHead(d, c, fixed=fixed, seed=3)
    w = head.weight.detach().double()
    assert w.shape == (c, d)
    assert torch.allclose(w.norm(dim=1), torch.ones(c, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(w.sum(0), torch.zeros(d, dtype=torch.float64), atol=1e-6)
    assert torch.linalg.matrix_rank(w, atol=1e-5) == (1 if c == 2 else 2)  # coplanar
    k = torch.arange(c)
    want = torch.cos(2 * math.pi * (k[:, None] - k[None, :]).double() / c)
    assert torch.allclose(w @ w.T, want, atol=1e-6)


def test_fixed_head_is_deterministic_and_frozen():
    a, b, other = SymmetricHead(32, 10, seed=7), SymmetricHead(32, 10, seed=7), SymmetricHead(32, 10, seed=8)
    assert torch.equal(a.weight, b.weight) and not torch.allclose(a.weight, other.weight)
    assert list(a.parameters()) == []
    assert [n for n, _ in SymmetricHead(32, 10, fixed=False).named_parameters()] == ["basis"]


def test_constrained_head_stays_symmetric_while_training():
    torch.manual_seed(0)
    head = SymmetricHead(12, 6, fixed=False, seed=1)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    before = head.weight.detach().clone()
    for _ in range(20):
        f, y = torch.randn(32, 12), torch.randint(0, 6, (32,))
        opt.zero_grad()
        F.cross_entropy(head(f), y).backward()
        opt.step()
    w = head.weight.detach()
    assert not torch.allclose(w, before, atol=1e-3)  # the plane moved
    assert torch.allclose(w.norm(dim=1), torch.ones(6), atol=1e-5)
    assert torch.allclose(w.sum(0), torch.zeros(12), atol=1e-5)
    assert torch.linalg.matrix_rank(w, atol=1e-4) == 2


def test_logits_are_scaled_cosines():
    head = SymmetricHead(8, 5, scale=10.0, seed=0)
    f = torch.randn(4, 8)
    cos = head.cosine(f)
    assert cos.abs().max() <= 1 + 1e-6
    assert torch.allclose(head(f), 10 * F.normalize(f, dim=1) @ head.weight.T, atol=1e-5)
    raw = SymmetricHead(8, 5, scale=10.0, seed=0, normalize=False)
    assert torch.allclose(raw(f), 10 * f @ head.weight.T, atol=1e-5)


def test_arc_margin_zero_is_scaled_cross_entropy():
    torch.manual_seed(0)
    cos = torch.rand(16, 7) * 2 - 1
    y = torch.randint(0, 7, (16,))
    assert torch.allclose(ArcMarginLoss(scale=12.0, margin=0.0)(cos, y), F.cross_entropy(12.0 * cos, y))
    # a tiny margin is continuous with it, a positive margin makes the loss larger
    near = ArcMarginLoss(scale=12.0, margin=1e-6)(cos, y)
    assert abs(float(near) - float(F.cross_entropy(12.0 * cos, y))) < 1e-4
    assert ArcMarginLoss(scale=12.0, margin=0.3)(cos, y) > F.cross_entropy(12.0 * cos, y)


def test_arc_margin_target_logit_is_cos_theta_plus_m():
    cos = torch.tensor([[0.8, 0.1, -0.3], [-0.99, 0.2, 0.0]])
    y = torch.tensor([0, 0])
    m = 0.5
    z = ArcMarginLoss(scale=1.0, margin=m).logits(cos, y)
    assert torch.allclose(z[0, 0], torch.cos(torch.acos(torch.tensor(0.8)) + m), atol=1e-5)
    assert torch.allclose(z[1, 0], torch.tensor(-0.99 - m * math.sin(m)), atol=1e-5)  # theta + m > pi
    assert torch.equal(z[:, 1:], cos[:, 1:])


@pytest.mark.parametrize("head_kind", ["fixed", "constrained", "cosine"])
@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_gradient_reaches_the_backbone(head_kind, margin):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten())
    d = 3 * 6 * 6
    head = {"fixed": lambda: SymmetricHead(d, 4), "constrained": lambda: SymmetricHead(d, 4, fixed=False),
            "cosine": lambda: CosineHead(d, 4, seed=0)}[head_kind]()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,))
    loss = ArcMarginLoss(margin=margin)(head.cosine(backbone(x)), y)
    loss.backward()
    g = backbone[0].weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    for p in head.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_class_centre_cosines():
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    f = np.array([[2.0, 0.0], [4.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [3.0, 3.0]])
    y = np.array([0, 0, 1, 1, 2])
    c = class_centre_cosines(f, y, w)
    assert np.allclose(c, [1.0, 1.0, -math.sqrt(0.5)])
    assert np.allclose(class_centre_cosines(torch.from_numpy(f), torch.from_numpy(y), w), c)
    assert np.isnan(class_centre_cosines(f, y, torch.cat([w, w[:1]]))[3])


def test_export_ready_swaps_heads_only():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), SymmetricHead(5, 4, scale=8.0, seed=2))
    exp = export_ready(model)
    assert isinstance(model[3], SymmetricHead) and isinstance(exp[3], nn.Linear)
    assert torch.allclose(exp[3].weight, 8.0 * model[3].weight)
    x = torch.randn(10, 6)
    f = model[:3](x)
    assert torch.allclose(exp(x), model(x) * f.norm(dim=1, keepdim=True), atol=1e-5)
    assert torch.equal(exp(x).argmax(1), model(x).argmax(1))
    assert isinstance(export_ready(CosineHead(5, 3)), nn.Linear)


@pytest.mark.parametrize("fixed", [True, False])
def test_export_and_edgepack_build_match_torch(tmp_path, fixed):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                          SymmetricHead(4 * 7 * 7, 5, seed=1, fixed=fixed)).eval()
    x = torch.randn(48, 1, 16, 16)
    exp = export_ready(model)
    with torch.no_grad():
        y_model, y_exp = model(x).numpy(), exp(x).numpy()
    assert np.array_equal(y_model.argmax(1), y_exp.argmax(1))

    path = tmp_path / "sym.pt2"
    torch.export.save(torch.export.export(exp, (x[:1],)), path)
    g = load_model(path)
    assert [n.op for n in g.nodes][-1] == "dense"
    y_float = run_float_output(g, x.numpy())
    assert np.allclose(y_float, y_exp, rtol=1e-5, atol=1e-5 * np.abs(y_exp).max())

    np.save(tmp_path / "calib.npy", x.numpy())
    build(path, "host", tmp_path / "out", calib=tmp_path / "calib.npy")
    y_host, _ = run(tmp_path / "out", x.numpy(), on="host")
    step = float(Model(tmp_path / "out").outp.quant.scale)
    err = np.abs(y_host - y_exp)
    assert err.max() <= max(4 * step, 0.03 * np.abs(y_exp).max()), (err.max(), step)
    # argmax agrees wherever the float top-2 gap exceeds the int8 error
    top2 = np.sort(y_exp, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * err.max()
    assert clear.mean() > 0.5
    assert np.array_equal(y_host.argmax(1)[clear], y_exp.argmax(1)[clear])
