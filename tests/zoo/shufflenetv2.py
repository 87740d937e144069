"""ShuffleNetV2 (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", ECCV
2018), Table 5: conv 3x3/2 (24), max pool 3x3/2, three stages of units, the 1x1 conv5, global pool, classifier.
A unit of stride 1 splits the channels in two (``chunk``), keeps one half and runs the other through 1x1 conv,
depthwise 3x3, 1x1 conv (BN, ReLU after the 1x1s); a unit of stride 2 runs the whole input through both branches
(depthwise 3x3/2 then 1x1; and the three-conv branch with a stride-2 depthwise). The two halves are concatenated
along channels and shuffled in two groups (``view``, ``transpose``, ``view``: the reference code's
channel_shuffle). 64x64 input, 10 classes.

``make(full=True)``: the 1.0x network (stages of 4, 8, 4 units, channels 116-232-464, conv5 1024; 1.3 M
parameters). ``make()`` (the tests): the 0.5x channels, stage 2 alone with two units (one of stride 2, one of
stride 1 with the split; the later stages repeat them), conv5 at 256, which keeps every kind of op at a build
time a test can afford."""

import torch
from torch import nn

from .common import conv_bn
from .seeded import randomize


def channel_shuffle(x, groups):
    """The reference code's shuffle (sizes read with ``size(i)``, so that torch.fx can trace it too)."""
    n, c, h, w = x.size(0), x.size(1), x.size(2), x.size(3)
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        half = cout // 2
        b2_in = cin if stride > 1 else half
        self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=None),
                                     conv_bn(cin, half)) if stride > 1 else None
        self.branch2 = nn.Sequential(conv_bn(b2_in, half), conv_bn(half, half, 3, stride, groups=half, act=None),
                                     conv_bn(half, half))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes=10, channels=(116, 232, 464), repeats=(4, 8, 4), last=1024):
        super().__init__()
        layers, c = [conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)], 24
        for cout, n in zip(channels, repeats):
            for i in range(n):
                layers.append(ShuffleUnit(c, cout, 2 if i == 0 else 1))
                c = cout
        layers.append(conv_bn(c, last))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(last, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def make(seed=0, full=False):
    model = ShuffleNetV2() if full else ShuffleNetV2(channels=(48, 96, 192), repeats=(2, 0, 0), last=256)
    return randomize(model, seed), (1, 3, 64, 64)
