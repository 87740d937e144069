"""Every supported operator in one ~250k-parameter model, through every import path: host == reference."""

import numpy as np
import pytest
import torch

from edgepack.build import build
from edgepack.runners import run
from mnist_common import MobileStyleNet


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("allops")
    torch.manual_seed(1)
    m = MobileStyleNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding matters
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    m.eval()
    x = torch.randn(1, 1, 28, 28)
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.standard_normal((64, 1, 28, 28)).astype(np.float32))
    return d, m, x, rng.standard_normal((12, 1, 28, 28)).astype(np.float32)


def export(fmt, d, m, x):
    p = d / f"net.{fmt}"
    if fmt == "pt2":
        torch.export.save(torch.export.export(m, (x,)), p)
    elif fmt == "onnx":
        torch.onnx.export(m, (x,), p, dynamo=True)
    elif fmt == "torchscript":
        p = d / "net_ts.pt"
        torch.jit.save(torch.jit.trace(m, (x,)), p)
    else:
        p = d / "net_module.pt"
        torch.save(m, p)
    return p


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "torchscript", "module"])
def test_all_ops_host_equals_reference(net, fmt):
    d, m, x, xs = net
    path = export(fmt, d, m, x)
    out = d / f"out_{fmt}"
    report = build(path, "host", out, calib=d / "calib.npy", input_shape=(1, 1, 28, 28),
                   trust_pickle=fmt == "module")  # a pickled nn.Module needs the opt-in
    ops = {l["op"] for l in report["layers"]}
    assert ops == {"conv2d_s8", "dwconv2d_s8", "dense_s8", "maxpool_s8", "avgpool_s8", "add_s8", "softmax_s8"}
    y_host, raw_host = run(out, xs, on="host")
    _, raw_ref = run(out, xs, on="reference")
    assert np.array_equal(raw_host, raw_ref)
    with torch.no_grad():
        y_float = m(torch.from_numpy(xs)).numpy()
    assert np.abs(y_host - y_float).max() < 0.1  # softmax probabilities, int8 with scale 1/256
    assert report["float_parameters"] > 240_000
    assert report["arena_bytes"] <= 1.05 * report["liveness_bound_bytes"]
