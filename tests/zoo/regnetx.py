"""RegNetX (Radosavovic et al., "Designing Network Design Spaces", CVPR 2020) at reduced width: a stem, three
stages of X blocks (1x1 conv, 3x3 grouped conv with group width 8, 1x1 conv, residual add; stride 2 and a
projection shortcut at each stage's first block), global average pooling, a linear classifier. 64x64 RGB in."""

import torch
import torch.nn as nn

from .seeded import randomize


def _cbr(cin, cout, k, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class XBlock(nn.Module):
    def __init__(self, cin, cout, stride, group_width=8):
        super().__init__()
        self.a = _cbr(cin, cout, 1)
        self.b = _cbr(cout, cout, 3, stride, groups=cout // group_width)
        self.c = _cbr(cout, cout, 1, relu=False)
        self.proj = _cbr(cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        s = self.proj(x) if self.proj is not None else x
        return torch.relu(self.c(self.b(self.a(x))) + s)


class RegNetX(nn.Module):
    def __init__(self, widths=(16, 32, 48), depths=(1, 1, 2), classes=10):
        super().__init__()
        self.stem = _cbr(3, 16, 3, 2)
        blocks, cin = [], 16
        for w, d in zip(widths, depths):
            for i in range(d):
                blocks.append(XBlock(cin, w, 2 if i == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        y = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def make(seed: int = 0):
    torch.manual_seed(seed)
    return randomize(RegNetX(), seed), (1, 3, 64, 64)
