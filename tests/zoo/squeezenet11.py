"""SqueezeNet 1.1 (Iandola et al. 2016; the 1.1 variant of the reference code), full depth: conv 3x3/2 (64),
max pools 3x3/2 in ceil mode (on a 64x64 input the sizes 31 -> 15 -> 7 -> 3 equal floor mode's, which edgepack
accepts), eight fire modules (squeeze 1x1, then expand 1x1 and expand 3x3 concatenated along channels), dropout,
a 1x1 conv classifier with ReLU, global average pool. 64x64 input, 10 classes.

``make(full=True)``: width 1.0, eight fire modules (0.73 M parameters, 38 int8 layers). ``make()`` (the tests):
every channel count halved and the first four fire modules (two stages; 24 int8 layers), to keep the build time a
test can afford."""

import torch
from torch import nn

from .seeded import randomize



class Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x):
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1(s)), torch.relu(self.expand3(s))], 1)


class SqueezeNet11(nn.Module):
    def __init__(self, classes=10, width=1.0, fires=8):
        super().__init__()

        def fire(cin, s, e):
            return Fire(int(cin * width), int(s * width), int(e * width), int(e * width))

        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        layers = [nn.Conv2d(3, int(64 * width), 3, 2), nn.ReLU(), pool,
                  fire(64, 16, 64), fire(128, 16, 64), pool, fire(128, 32, 128), fire(256, 32, 128), pool,
                  fire(256, 48, 192), fire(384, 48, 192), fire(384, 64, 256), fire(512, 64, 256)]
        if fires == 4:  # the first two stages: conv, pool, fire, fire, pool, fire, fire
            layers = layers[:8]
        cout = {8: 512, 4: 256}[fires]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(int(cout * width), classes, 1), nn.ReLU())

    def forward(self, x):
        return self.classifier(self.features(x)).mean((2, 3))


def make(seed=0, full=False):
    return randomize(SqueezeNet11() if full else SqueezeNet11(width=0.5, fires=4), seed), (1, 3, 64, 64)
