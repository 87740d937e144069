"""EfficientNet-B0 (Tan & Le, ICML 2019): MBConv blocks in seven stages (expansion 1 then 6, kernels 3 / 5,
channels 16-24-40-80-112-192-320, 1-2-2-3-3-4-1 blocks, the repeats with residual adds), SiLU everywhere,
squeeze-excite with a sigmoid gate (squeeze to a quarter of the block's input channels), the 1280-wide head,
dropout before the classifier. 64x64 input, 10 classes.

``make(full=True)``: B0 at width 1.0, 16 blocks (4.0 M parameters). ``make()`` (the tests) is width- and
depth-reduced: width 0.5, the first two stages with one block each and a repeat of stage 2 (a squeeze-excite block
with a residual add): 38 int8 layers, to keep the build time a test can afford."""

from torch import nn

from .common import InvertedResidual, conv_bn, make_divisible
from .seeded import randomize

# expansion, kernel, stride, output channels, repeats
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def MBConv(cin, expand, k, stride, cout):  # noqa: N802 (a block class in the paper's name)
    return InvertedResidual(cin, cin * expand, cout, k, stride, nn.SiLU, se=max(1, cin // 4), se_act=nn.SiLU,
                            gate=nn.Sigmoid)


REDUCED = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2)]


class EfficientNetB0(nn.Module):
    def __init__(self, classes=10, width=1.0, stages=STAGES):
        super().__init__()

        def ch(v):
            return make_divisible(v * width)

        layers, c = [conv_bn(3, ch(32), 3, 2, act=nn.SiLU)], ch(32)
        for e, k, s, cout, n in stages:
            for i in range(n):
                layers.append(MBConv(c, e, k, s if i == 0 else 1, ch(cout)))
                c = ch(cout)
        layers.append(conv_bn(c, ch(1280), act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(ch(1280), classes))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def make(seed=0, full=False):
    model = EfficientNetB0() if full else EfficientNetB0(width=0.5, stages=REDUCED)
    return randomize(model, seed), (1, 3, 64, 64)
