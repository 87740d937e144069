"""MobileNetV3-Small (Howard et al., "Searching for MobileNetV3", ICCV 2019), Table 2: inverted residual blocks
with depthwise 3x3 / 5x5 convs, HardSwish in the later stages, squeeze-excite with a hardsigmoid gate, a 1x1 conv
to 576, global pool, a 1024-wide HardSwish classifier with dropout. 64x64 input, 10 classes.

``make(full=True)``: the paper's 11 blocks at width 1.0 (1.5 M parameters, 107 int8 layers). ``make()`` (the
tests): width 0.5 and three of the blocks (0: ReLU, squeeze-excite, stride 2; 3: HardSwish, squeeze-excite, 5x5,
stride 2; 4: the same with a residual add), which keeps every kind of op at a build time a test can afford."""

from torch import nn

from .common import InvertedResidual, conv_bn, make_divisible
from .seeded import randomize

# kernel, expanded channels, output channels, squeeze-excite, activation, stride
CONFIG = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
          (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
          (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
          (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]


REDUCED = (0, 3, 4)


class MobileNetV3Small(nn.Module):
    def __init__(self, classes=10, width=1.0, blocks=None):
        super().__init__()

        def ch(v):
            return make_divisible(v * width)

        layers, c = [conv_bn(3, ch(16), 3, 2, act=nn.Hardswish)], ch(16)
        for i, (k, exp, cout, se, nl, s) in enumerate(CONFIG):
            if blocks is None or i in blocks:
                layers.append(InvertedResidual(c, ch(exp), ch(cout), k, s, nn.Hardswish if nl == "HS" else nn.ReLU,
                                               se=make_divisible(ch(exp) // 4) if se else None))
                c = ch(cout)
        layers.append(conv_bn(c, ch(576), act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(ch(576), ch(1024)), nn.Hardswish(), nn.Dropout(0.2),
                                  nn.Linear(ch(1024), classes))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def make(seed=0, full=False):
    model = MobileNetV3Small() if full else MobileNetV3Small(width=0.5, blocks=REDUCED)
    return randomize(model, seed), (1, 3, 64, 64)
