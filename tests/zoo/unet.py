"""U-Net (Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015):
an encoder of double 3x3 convs (here with BN and ReLU, padded so the sizes halve exactly) and 2x2 max pools,
doubling the channels at each level; a decoder that upsamples with a 2x2 stride-2 ConvTranspose2d halving the
channels, concatenates the encoder's features of the same size (the skip connection), and runs a double 3x3
conv; a 1x1 conv to per-pixel class scores. 64x64 RGB in, (N, 2, 64, 64) out.

``make(full=True)``: the paper's widths (64-128-256-512-1024, four pools; 31 M parameters, far beyond a
microcontroller). ``make()`` (the tests): base width 8 and two pools (8-16-32; two skip concats), which keeps
every kind of op at a build time a test can afford."""

import torch
from torch import nn

from .common import conv_bn
from .seeded import randomize


def double_conv(cin, cout):
    return nn.Sequential(conv_bn(cin, cout, 3), conv_bn(cout, cout, 3))


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.conv = double_conv(cin // 2 + cout, cout)

    def forward(self, x, skip):
        return self.conv(torch.cat((skip, self.up(x)), 1))


class UNet(nn.Module):
    def __init__(self, cin=3, classes=2, base=64, depth=4):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([double_conv(cin, base)] + [double_conv(a, b) for a, b in zip(widths, widths[1:])])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([Up(b, a) for a, b in zip(widths, widths[1:])][::-1])
        self.head = nn.Conv2d(base, classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, skip in zip(self.up, skips[-2::-1]):
            x = up(x, skip)
        return self.head(x)


def make(seed=0, full=False):
    return randomize(UNet() if full else UNet(base=8, depth=2), seed), (1, 3, 64, 64)
