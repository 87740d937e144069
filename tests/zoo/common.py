"""Building blocks shared by the zoo models: conv-BN-activation, squeeze-excite, the inverted residual block."""

from torch import nn


def make_divisible(v, divisor=8, min_value=None):
    """The channel rounding of the MobileNet / EfficientNet / GhostNet reference code."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn(cin, cout, k=1, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """x * gate(W2 act(W1 mean_hw(x))): the squeeze-excite block of MobileNetV3 (gate hardsigmoid, act ReLU),
    EfficientNet / MnasNet (gate sigmoid, act SiLU / ReLU) and GhostNet."""

    def __init__(self, c, squeeze, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.reduce = nn.Conv2d(c, squeeze, 1)
        self.act = act()
        self.expand = nn.Conv2d(squeeze, c, 1)
        self.gate = gate()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3, EfficientNet and MnasNet's block: expand 1x1 (when exp != cin), depthwise kxk with the
    stride, squeeze-excite (``se`` = its squeeze width, or None), project 1x1 without activation; a residual add
    where the shape is kept."""

    def __init__(self, cin, exp, cout, k, stride, act=nn.ReLU, se=None, se_act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        layers = [conv_bn(cin, exp, act=act)] if exp != cin else []
        layers.append(conv_bn(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp, se, act=se_act, gate=gate))
        layers.append(conv_bn(exp, cout, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y
