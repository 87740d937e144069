"""Binary layers end to end: sign() inputs and two-valued weights become XNOR-popcount kernels; BN + sign fold
into integer thresholds; host and boards equal the reference; post-training --weights binary."""

import numpy as np
import pytest
import torch
from torch import nn

from edgepack.build import build
from edgepack.runners import run
from toolchains import require_board_tools


class BinaryBlockNet(nn.Module):
    """int8 conv -> BN -> sign -> binary conv (s2, pad) -> BN -> sign -> binary conv -> BN -> ReLU (int8 out)
    -> flatten -> int8 linear; and a binary dense branch variant."""

    def __init__(self, c=(8, 37, 40), dense_binary=False):
        super().__init__()
        torch.manual_seed(0)
        self.c0 = nn.Conv2d(1, c[0], 3, padding=1)
        self.bn0 = nn.BatchNorm2d(c[0])
        self.c1 = nn.Conv2d(c[0], c[1], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c[1])
        self.c2 = nn.Conv2d(c[1], c[2], (3, 1), padding=(1, 0), bias=False)
        self.bn2 = nn.BatchNorm2d(c[2])
        self.dense_binary = dense_binary
        feat = c[2] * 6 * 6
        self.fc1 = nn.Linear(feat, 24)
        self.fc = nn.Linear(24 if dense_binary else feat, 10)
        with torch.no_grad():
            for conv in (self.c1, self.c2, self.fc1):
                w = conv.weight
                a = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
                w.copy_(torch.where(w >= 0, 1.0, -1.0) * a)
            for bn in (self.bn0, self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.3, 0.3)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(-1, 1)  # negative gammas flip the sign of the folded weights
                bn.bias.uniform_(-0.5, 0.5)
        self.eval()

    def forward(self, x):
        x = torch.sign(self.bn0(self.c0(x)))
        x = torch.sign(self.bn1(self.c1(x)))
        x = self.bn2(self.c2(x))
        if self.dense_binary:
            x = self.fc1(torch.sign(x).flatten(1))
            return self.fc(torch.relu(x))
        return self.fc(torch.relu(x).flatten(1))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("binary")
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.standard_normal((32, 1, 12, 12)).astype(np.float32))
    return d, rng.standard_normal((6, 1, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("dense_binary", [False, True])
def test_binary_layers_are_recognised_and_bit_exact(data, fmt, dense_binary):
    d, x = data
    m = BinaryBlockNet(dense_binary=dense_binary)
    p = d / f"bnn_{dense_binary}.{fmt}"
    ex = (torch.zeros(1, 1, 12, 12),)
    if fmt == "pt2":
        torch.export.save(torch.export.export(m, ex), p)
    else:
        torch.onnx.export(m, ex, p, dynamo=True)
    out = d / f"out_{fmt}_{dense_binary}"
    r = build(p, "host", out, calib=d / "calib.npy")
    ops = [l["op"] for l in r["layers"]]
    want = ["conv2d_s8", "binarize_s8", "bconv2d_b1", "bconv2d_b1" if dense_binary else "bconv2d_b1_s8"]
    want += ["bconv2d_b1_s8", "dense_s8"] if dense_binary else ["dense_s8"]
    assert ops == want
    for l in r["layers"]:
        if l["op"].startswith("bconv"):
            o, kh, kw, cw = l["weight_shape"]
            assert l["packed_bytes"] == o * kh * kw * cw * 4  # ceil(C / 32) words per tap and channel
            assert l["weight_format"].startswith("binary")
    _, raw_host = run(out, x, on="host")
    _, raw_ref = run(out, x, on="reference")
    assert np.array_equal(raw_host, raw_ref)


@pytest.mark.parametrize("board", ["cortex-m7", "rpi4"])
def test_binary_model_on_boards(data, board):
    require_board_tools(board)
    d, x = data
    m = BinaryBlockNet(dense_binary=True)
    p = d / "bnn_boards.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 1, 12, 12),)), p)
    out = d / f"out_{board}"
    build(p, board, out, calib=d / "calib.npy")
    _, raw_emu = run(out, x, on="emulator")
    _, raw_ref = run(out, x, on="reference")
    assert np.array_equal(raw_emu, raw_ref)


def test_post_training_binarization_of_a_float_model(data):
    from mnist_common import MobileStyleNet

    d, _ = data
    torch.manual_seed(0)
    m = MobileStyleNet().eval()
    p = d / "mobile.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 1, 28, 28),)), p)
    cal = d / "calib28.npy"
    np.save(cal, np.random.default_rng(1).standard_normal((16, 1, 28, 28)).astype(np.float32))
    r_int8 = build(p, "host", d / "mobile_int8", calib=cal)
    r_bin = build(p, "host", d / "mobile_bin", calib=cal, weights="binary")
    fmts = [l["weight_format"] for l in r_bin["layers"] if l["weight_format"]]
    assert fmts[0] == "int8 per-channel" and fmts[-1] == "int8 per-channel"  # first and last stay int8
    assert sum(f.startswith("binary") for f in fmts) >= 3
    assert r_bin["weights_bytes"] < r_int8["weights_bytes"] / 3
    assert r_bin["quantization"]["binarized_post_training"]
    x = np.random.default_rng(2).standard_normal((4, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(run(d / "mobile_bin", x, on="host")[1], run(d / "mobile_bin", x, on="reference")[1])
