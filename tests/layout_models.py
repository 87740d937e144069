"""Small torch models for tests/test_layout_ops.py (issue 14 part B): rank-3 inputs and 1-D ops, transposes,
channel shuffle, grouped and transposed convolution, resizes, dilated max pooling. A module of its own so that
pickled models can be unpickled."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from frontend_models import randomize_bn  # noqa: F401  (re-exported for the tests)


class Conv1dNet(nn.Module):
    """(N, C, L) input: Conv1d (padding, stride 2, dilation, groups), BatchNorm1d, MaxPool1d, AvgPool1d, a zero
    pad, AdaptiveAvgPool1d, Linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(5, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(8)
        self.mp = nn.MaxPool1d(3, stride=2, padding=1)
        self.c2 = nn.Conv1d(8, 8, 3, stride=2, dilation=2, groups=4, bias=False)
        self.bn2 = nn.BatchNorm1d(8)
        self.ap = nn.AvgPool1d(2, stride=1)
        self.c3 = nn.Conv1d(8, 6, 2)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = self.mp(torch.relu(self.bn1(self.c1(x))))
        y = self.ap(torch.relu(self.bn2(self.c2(y))))
        y = self.c3(F.pad(y, (1, 0)))
        return self.fc(torch.flatten(self.gap(y), 1))


class Conv1dSeq(nn.Module):
    """(N, C, L) in, (N, C', L') out: Conv1d, a residual add of rank-3 tensors, ConvTranspose1d."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 6, 5, padding=2)
        self.c2 = nn.Conv1d(6, 6, 1)
        self.c3 = nn.ConvTranspose1d(6, 4, 4, stride=2, padding=1)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        return self.c3(y + self.c2(y))


class NHWCNet(nn.Module):
    """Takes NHWC, permutes it to NCHW first; ends with permute(0, 2, 3, 1) + flatten + Linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        y = torch.relu(self.c1(x.permute(0, 3, 1, 2)))
        y = self.c2(y).permute(0, 2, 3, 1)
        return self.fc(y.flatten(1))


class ShuffleBlock(nn.Module):
    """ShuffleNet-style: grouped 1x1 conv, channel shuffle by view / transpose / reshape, depthwise 3x3,
    grouped 1x1 conv, a permute in the middle that needs a real transpose (NHWC -> NCHW of a 4-D tensor that a
    conv reads back)."""

    def __init__(self):
        super().__init__()
        self.g1 = nn.Conv2d(6, 12, 1, groups=3)
        self.bn1 = nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.g2 = nn.Conv2d(12, 8, 1, groups=2)
        self.c = nn.Conv2d(7, 8, 1)

    def forward(self, x):
        y = torch.relu(self.bn1(self.g1(x)))
        n, c, h, w = y.shape
        y = y.view(n, 3, c // 3, h, w).transpose(1, 2).reshape(n, c, h, w)
        y = self.g2(self.dw(y))
        z = self.c(y.permute(0, 3, 2, 1))  # (N, W, H, C) read as channels = W: a real transpose
        return z.permute(0, 3, 2, 1)


class UpNet(nn.Module):
    """An autoencoder-ish decoder: ConvTranspose2d stride 2 with padding and output_padding, BatchNorm after it,
    dilated max pooling, Upsample nearest x2 and x3, bilinear (half-pixel and align_corners)."""

    def __init__(self, exact=False):
        super().__init__()
        self.exact = exact
        self.c = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.ct = nn.ConvTranspose2d(6, 5, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.mp = nn.MaxPool2d(3, stride=1, padding=1, dilation=2)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.bil = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.c2 = nn.Conv2d(5, 4, 3, stride=3)
        self.ct2 = nn.ConvTranspose2d(4, 3, 2, stride=2)

    def forward(self, x):
        y = torch.relu(self.bn(self.ct(torch.relu(self.c(x)))))
        y = self.mp(y)
        y = self.c2(self.bil(self.up2(y)))
        y = F.interpolate(y, scale_factor=3, mode="nearest-exact" if self.exact else "nearest")
        y = F.interpolate(y, size=(y.shape[2] * 2 - 1, y.shape[3] * 2 - 1), mode="bilinear", align_corners=True)
        return self.ct2(y)


class UpNetExact(UpNet):
    def __init__(self):
        super().__init__(exact=True)


class SeqLinear(nn.Module):
    """(N, C, L) input straight into a Linear over L: not supported; the error must name the linear."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(7, 3)

    def forward(self, x):
        return self.fc(x)


class SeqCumsum(nn.Module):
    """A rank-3 input followed by an operator edgepack does not have: the error names that operator."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(3, 3, 1)

    def forward(self, x):
        return torch.cumsum(self.c(x), dim=2)


class LSTMHead(nn.Module):
    """(N, T, F) -> LSTM (batch_first) -> final hidden state h_n[-1] -> Linear."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 10, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.fc(h[-1])


class GRUSeqFirst(nn.Module):
    """(T, N, F) -> GRU (batch_first=False) -> last step y[-1] -> Linear: the model's batch is its axis 1."""

    batch_axis = 1

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 7)
        self.fc = nn.Linear(7, 4)

    def forward(self, x):
        y, _ = self.gru(x)
        return self.fc(y[-1])


class ConvLSTM(nn.Module):
    """(N, C, L) -> Conv1d -> permute to (N, L, C) -> LSTM -> every step out, (N, L, H)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(4, 6, 3, padding=1)
        self.lstm = nn.LSTM(6, 5, batch_first=True)

    def forward(self, x):
        y, _ = self.lstm(torch.relu(self.c(x)).permute(0, 2, 1))
        return y


class BiLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 4, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.lstm(x)[0]
