"""MnasNet-B1 (Tan et al., CVPR 2019; the layout of torchvision's mnasnet1_0): the stem (conv 3x3/2 32,
depthwise separable 16), six inverted-residual stages (expansion 3 / 6, kernels 3 / 5, channels
24-40-80-96-192-320, 3-3-3-2-4-1 blocks, the repeats with residual adds), the 1x1 conv to 1280, global pool,
dropout before the classifier (eval mode: torch.export keeps aten.dropout, which edgepack drops). ReLU, no
squeeze-excite. 64x64 input, 10 classes.

``make(full=True)``: width 1.0, 16 blocks (3.1 M parameters). ``make()`` (the tests): width 0.5, one block per
stage plus a repeat of the first (a residual add): 27 int8 layers, to keep the build time a test can afford."""

from torch import nn

from .common import InvertedResidual, conv_bn, make_divisible
from .seeded import randomize

# expansion, kernel, stride, output channels, repeats
STAGES = [(3, 3, 2, 24, 3), (3, 5, 2, 40, 3), (6, 5, 2, 80, 3), (6, 3, 1, 96, 2), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
REDUCED = [(3, 3, 2, 24, 2), (3, 5, 2, 40, 1), (6, 5, 2, 80, 1), (6, 3, 1, 96, 1), (6, 5, 2, 192, 1),
           (6, 3, 1, 320, 1)]


class MnasNet(nn.Module):
    def __init__(self, classes=10, width=1.0, stages=STAGES):
        super().__init__()

        def ch(v):
            return make_divisible(v * width)

        layers = [conv_bn(3, ch(32), 3, 2), conv_bn(ch(32), ch(32), 3, groups=ch(32)), conv_bn(ch(32), ch(16), act=None)]
        c = ch(16)
        for e, k, s, cout, n in stages:
            for i in range(n):
                layers.append(InvertedResidual(c, c * e, ch(cout), k, s if i == 0 else 1))
                c = ch(cout)
        layers.append(conv_bn(c, 1280 if width == 1.0 else ch(1280)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True),
                                        nn.Linear(1280 if width == 1.0 else ch(1280), classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def make(seed=0, full=False):
    return randomize(MnasNet() if full else MnasNet(width=0.5, stages=REDUCED), seed), (1, 3, 64, 64)
