"""GhostNet (Han et al., CVPR 2020): ghost modules (a primary 1x1 conv, a cheap depthwise 3x3 "ghost" conv of its
output, the two concatenated along channels and sliced to the module's width, ``out[:, :oup]``), ghost
bottlenecks with stride-2 depthwise convs, squeeze-excite (ReLU, hardsigmoid gate) and shortcuts (identity, or
depthwise + pointwise convs when the shape changes); the paper's Table 1 (16 bottlenecks, channels
16-24-40-80-112-160), the 960 conv, global pool, 1280 conv, dropout, classifier. 64x64 input, 10 classes.

``make(full=True)``: the paper's network at width 1.0 (16 bottlenecks). ``make()`` (the tests): width 0.5 and
three bottlenecks (the first: identity shortcut; the first of stage 3: stride 2, squeeze-excite, 5x5, conv
shortcut; then one of stage 4 at an odd width, 41, so the slice keeps fewer channels than the concat has): 37
int8 layers, to keep the build time a test can afford."""

import math

import torch
from torch import nn

from .common import SqueezeExcite, conv_bn, make_divisible
from .seeded import randomize

# kernel, expanded channels, output channels, squeeze-excite, stride (Table 1)
CONFIG = [(3, 16, 16, False, 1), (3, 48, 24, False, 2), (3, 72, 24, False, 1), (5, 72, 40, True, 2),
          (5, 120, 40, True, 1), (3, 240, 80, False, 2), (3, 200, 80, False, 1), (3, 184, 80, False, 1),
          (3, 184, 80, False, 1), (3, 480, 112, True, 1), (3, 672, 112, True, 1), (5, 672, 160, True, 2),
          (5, 960, 160, False, 1), (5, 960, 160, True, 1), (5, 960, 160, False, 1), (5, 960, 160, True, 1)]
# the test configuration: (kernel, expanded, output, SE, stride) at width 0.5
REDUCED = [(3, 8, 8, False, 1), (5, 36, 20, True, 2), (3, 92, 41, False, 1)]


class GhostModule(nn.Module):
    def __init__(self, cin, oup, relu=True):
        super().__init__()
        self.oup = oup
        init = math.ceil(oup / 2)
        act = nn.ReLU if relu else None
        self.primary = conv_bn(cin, init, act=act)
        self.cheap = conv_bn(init, init, 3, groups=init, act=act)

    def forward(self, x):
        x1 = self.primary(x)
        out = torch.cat([x1, self.cheap(x1)], 1)
        return out[:, :self.oup]


class GhostBottleneck(nn.Module):
    def __init__(self, cin, k, mid, cout, se, stride):
        super().__init__()
        layers = [GhostModule(cin, mid)]
        if stride > 1:
            layers.append(conv_bn(mid, mid, k, stride, groups=mid, act=None))
        if se:
            layers.append(SqueezeExcite(mid, make_divisible(mid // 4, 4)))
        layers.append(GhostModule(mid, cout, relu=False))
        self.body = nn.Sequential(*layers)
        self.shortcut = None if stride == 1 and cin == cout else nn.Sequential(
            conv_bn(cin, cin, k, stride, groups=cin, act=None), conv_bn(cin, cout, act=None))

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class GhostNet(nn.Module):
    def __init__(self, classes=10, config=CONFIG, stem=16, last=960, head=1280):
        super().__init__()
        layers, c = [conv_bn(3, stem, 3, 2)], stem
        for k, mid, cout, se, s in config:
            layers.append(GhostBottleneck(c, k, mid, cout, se, s))
            c = cout
        layers.append(conv_bn(c, last))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Conv2d(last, head, 1), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(head, classes))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3), keepdim=True))


def make(seed=0, full=False):
    model = GhostNet() if full else GhostNet(config=REDUCED, stem=8, last=480, head=640)
    return randomize(model, seed), (1, 3, 64, 64)
