"""A convolutional autoencoder for 64x64 grey images: a stride-2 conv encoder to 8x8, a decoder with a stride-2
ConvTranspose2d (padding 1, output_padding 1), nearest x2 upsampling and bilinear x2 upsampling, each followed
by a 3x3 conv."""

import torch
import torch.nn as nn

from .seeded import randomize


def _cbr(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ConvAutoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(_cbr(1, 16, 2), _cbr(16, 32, 2), _cbr(32, 32, 2))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(32, 32, 3, stride=2, padding=1, output_padding=1, bias=False), nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), _cbr(32, 16),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(16, 1, 3, padding=1))

    def forward(self, x):
        return self.decoder(self.encoder(x))


def make(seed: int = 0):
    torch.manual_seed(seed)
    return randomize(ConvAutoencoder(), seed), (1, 1, 64, 64)
