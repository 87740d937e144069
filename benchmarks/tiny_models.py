"""Two MLPerf Tiny-like models of our own (random weights, for instruction counts), as torch modules.

* ``ResNet8``: the MLPerf Tiny image-classification ResNet-8 shape (CIFAR-10, 32x32x3): a 3x3 conv to 16
  channels, three residual stages of 16, 32 and 64 channels (two 3x3 convs each; stride 2 and a 1x1 strided
  shortcut conv in the last two), global average pooling and a 10-way dense layer: 12.5M MACs.
* ``DSCNN``: the MLPerf Tiny keyword-spotting DS-CNN shape (49x10 MFCC, 1 channel): a 10x4 stride-2 conv to 64
  channels, four depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, 64 channels, BN + ReLU each),
  global average pooling and a 12-way dense layer: 2.7M MACs.

BatchNorm layers are folded into the convolutions by edgepack's frontend.
"""

from __future__ import annotations

import torch
from torch import nn


def _cbr(ci, co, k, s=1, p=None, relu=True):
    layers = [nn.Conv2d(ci, co, k, stride=s, padding=k // 2 if p is None else p, bias=False), nn.BatchNorm2d(co)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class _Block(nn.Module):
    def __init__(self, ci, co, stride):
        super().__init__()
        self.a = _cbr(ci, co, 3, stride)
        self.b = _cbr(co, co, 3, relu=False)
        self.short = None if stride == 1 and ci == co else nn.Conv2d(ci, co, 1, stride=stride)
        self.relu = nn.ReLU()

    def forward(self, x):
        s = x if self.short is None else self.short(x)
        return self.relu(self.b(self.a(x)) + s)


class ResNet8(nn.Module):
    input_shape = (1, 3, 32, 32)

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 16, 3)
        self.stages = nn.Sequential(_Block(16, 16, 1), _Block(16, 32, 2), _Block(32, 64, 2))
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


class DSCNN(nn.Module):
    input_shape = (1, 1, 49, 10)

    def __init__(self, c=64, blocks=4):
        super().__init__()
        self.stem = _cbr(1, c, (10, 4), 2, p=(5, 1))
        body = []
        for _ in range(blocks):
            body += [nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                     nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.pool = nn.AvgPool2d((25, 5))
        self.fc = nn.Linear(c, 12)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.body(self.stem(x))), 1))


def _init(m, seed):
    torch.manual_seed(seed)
    for mod in m.modules():  # non-trivial BN statistics, so the folded weights are not all alike
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def mnist_cnn():
    """The MNIST example's ResidualCNN (examples/mnist_common.py), untrained."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from mnist_common import ResidualCNN

    m = ResidualCNN()
    m.input_shape = (1, 1, 28, 28)
    return m


MODELS = {"resnet8": lambda: _init(ResNet8(), 8), "dscnn": lambda: _init(DSCNN(), 9),
          "mnist": lambda: _init(mnist_cnn(), 10)}
