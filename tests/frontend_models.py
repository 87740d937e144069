"""Small torch models for tests/test_frontend.py (a module of its own so pickled models can be unpickled)."""

import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn


def export(model, shape, fmt, folder: Path) -> tuple[Path, tuple | None]:
    """Save ``model`` in format ``fmt`` (pt2, onnx_dynamo, onnx_legacy, ts_script, ts_trace, pickle); return the
    file and the input_shape load_model needs."""
    x = torch.zeros(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            if fmt == "pt2":
                p = folder / "m.pt2"
                torch.export.save(torch.export.export(model, (x,)), str(p))
                return p, None
            if fmt.startswith("onnx"):
                p = folder / f"{fmt}.onnx"
                torch.onnx.export(model, (x,), str(p), dynamo=(fmt == "onnx_dynamo"), verbose=False)
                return p, None
            if fmt.startswith("ts"):
                p = folder / f"{fmt}.pt"
                sm = torch.jit.script(model) if fmt == "ts_script" else torch.jit.trace(model, (x,))
                torch.jit.save(sm, str(p))
                return p, shape
            p = folder / "pickled.pt"
            torch.save(model, str(p))
            return p, shape
        finally:
            logging.disable(logging.NOTSET)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm (1-D and 2-D) non-trivial running statistics and affine parameters, so folding is
    tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


class ConvZoo(nn.Module):
    """conv 1x1 / 3x3 stride 2 / 5x5 / (3, 1), BN, ReLU, ReLU6, maxpool, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 1)
        self.bn1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.c3 = nn.Conv2d(6, 6, 5, padding=2)
        self.c4 = nn.Conv2d(6, 6, (3, 1), padding=(1, 0))
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        x = nn.functional.relu6(self.bn2(self.c2(x)))
        x = self.c4(torch.relu(self.c3(x)))
        x = self.pool(x)
        return self.fc(torch.flatten(x, 1))


class PadDilDw(nn.Module):
    """asymmetric ZeroPad2d, dilation, depthwise (and multiplier 2), hardtanh, residual add, avgpools, softmax."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 2, 0, 1))  # left, right, top, bottom
        self.c1 = nn.Conv2d(3, 8, 3, dilation=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.Hardtanh(-1.0, 1.5)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.dw2 = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.ap1 = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.ap2 = nn.AvgPool2d(2, stride=2, padding=1, count_include_pad=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = self.act1(self.bn1(self.c1(self.pad(x))))
        y = y + torch.relu(self.bn2(self.dw(y)))
        y = self.ap2(self.ap1(self.dw2(y)))
        y = torch.flatten(self.gap(y), 1)
        return torch.softmax(self.fc(self.drop(y)), dim=-1)


class MeanHead(nn.Module):
    """conv with padding="same" and an even kernel (uneven pads), mean over (H, W) without keepdim, linear."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, (2, 4), padding="same")
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.c(x)).mean(dim=(-2, -1)))


class ViewHead(nn.Module):
    """maxpool with padding, mean with keepdim, view(x.size(0), -1), clamp, linear."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mp = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.mp(torch.clamp(self.c(x), 0.0, 4.0))
        y = y.mean(dim=(2, 3), keepdim=True)
        return self.fc(y.view(y.size(0), -1))


class MLP(nn.Module):
    """a flat (N, F) input: linear, ReLU, dropout, linear, softmax."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 16)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return torch.softmax(self.fc2(self.drop(torch.relu(self.fc1(x)))), dim=1)


class CumsumNet(nn.Module):
    """An operator edgepack does not import (cumulative sum)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.cumsum(self.c(x), dim=1)


class SortNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(20, 8)

    def forward(self, x):
        return torch.sort(self.fc(x), dim=1)[0]


class CeilPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.mp = nn.MaxPool2d(3, stride=2, ceil_mode=True)

    def forward(self, x):
        return self.mp(self.c(x))


class EvalNoOps(nn.Module):
    """Eval-mode no-ops that torch.export keeps: dropout (also in place), Dropout2d (feature_dropout),
    AlphaDropout, FeatureAlphaDropout, Identity, clone, contiguous, detach, a float32 -> float32 conversion."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.d = nn.Dropout(0.3, inplace=True)
        self.d2 = nn.Dropout2d(0.2)
        self.ad = nn.AlphaDropout(0.2)
        self.fad = nn.FeatureAlphaDropout(0.1)
        self.id = nn.Identity()
        self.fc = nn.Linear(4 * 12 * 12, 3)

    def forward(self, x):
        y = self.fad(self.ad(self.d2(self.d(torch.relu(self.c(x))))))
        y = self.id(y).clone().contiguous().detach().to(torch.float32)
        y = nn.functional.dropout(y, 0.5, training=False)
        return self.fc(torch.flatten(y, 1))


class Activations(nn.Module):
    """Every element-wise function edgepack tabulates, squeeze-excite (x * hardsigmoid(conv(mean(x)))), PReLU
    with per-channel slopes and with one slope, and standalone batchnorms (after an add and on (N, F))."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 6, 3, padding=1)
        self.se1 = nn.Conv2d(6, 3, 1)
        self.se2 = nn.Conv2d(3, 6, 1)
        self.pr = nn.PReLU(6)
        self.pr1 = nn.PReLU()
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 8)
        self.bn1 = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        F = nn.functional
        y = self.c(x)
        y = F.hardswish(y) + torch.sigmoid(y) * y + torch.tanh(y) - F.hardsigmoid(y) + F.silu(y)
        y = y * F.hardsigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        y = F.leaky_relu(y, 0.1) + F.elu(y, 0.5) + F.gelu(y) + F.gelu(y, approximate="tanh") + F.mish(y)
        y = self.pr(y) + self.pr1(F.softplus(y)) + F.selu(y) + F.celu(y, 1.5) + F.relu6(y)
        y = self.bn(y + torch.exp(-torch.abs(y)))
        y = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        return self.fc2(self.bn1(torch.relu(self.fc(y))))


class ConcatSlice(nn.Module):
    """concat along C, H and W, chunk / split / narrow / strided slices, sub and rsub, division by a constant,
    per-channel constants, pads with a value (H, W and C) and a zero pad before a max pool."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 5, 3, padding=1)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 9).reshape(1, 9, 1, 1))
        self.d = nn.Conv2d(9, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 3 * 2, 3)

    def forward(self, x):
        F = nn.functional
        y = torch.cat([torch.relu(self.a(x)), self.b(x)], 1)           # channels
        p, q = y.chunk(2, dim=2)                                        # along H
        y = torch.cat([q, p], 2) * self.scale - 0.25                     # per-channel constant, scalar
        u, v = torch.split(y, [4, 5], dim=1)
        y = torch.cat([v, u], dim=1)
        y = torch.cat([y[:, :, :, 1:], y[:, :, :, :1]], 3)              # along W
        y = 1.0 - y / 3.0 + y.narrow(1, 0, 9) + (y + y * y)             # rsub, div, narrow
        y = F.pad(y, (1, 0, 2, 1), value=0.3)                           # a pad with a value
        y = F.pad(y, (0, 0, 0, 0, 1, 2))                                # channel pad (zeros)
        y = self.d(y[:, 1:10])                                          # a channel slice
        y = F.max_pool2d(F.pad(y, (1, 1, 1, 1)), 2)                     # a zero pad before a max pool: (5, 4)
        y = y[:, :, ::2, ::2] + 0.5 * y[:, :, 0::2, 1::2]               # strided slices: (3, 2)
        return self.fc(torch.flatten(y, 1))
