"""Keyword spotting on MFCC frames with depthwise-separable 1-D convolutions (the DS-CNN of Zhang et al.,
"Hello Edge", 2017, with its 2-D convs over (time, MFCC) replaced by Conv1d over time, MFCC coefficients as
channels): 40 coefficients x 49 frames in, (N, 40, 49); 12 classes."""

import torch
import torch.nn as nn

from .seeded import randomize


def _ds(c, stride):
    return nn.Sequential(nn.Conv1d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm1d(c), nn.ReLU(),
                         nn.Conv1d(c, c, 1, bias=False), nn.BatchNorm1d(c), nn.ReLU())


class KWSDS1d(nn.Module):
    def __init__(self, mfcc=40, width=64, classes=12):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(mfcc, width, 5, 2, 2, bias=False), nn.BatchNorm1d(width), nn.ReLU())
        self.body = nn.Sequential(_ds(width, 1), _ds(width, 2), nn.MaxPool1d(2), _ds(width, 1), _ds(width, 1))
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.body(self.stem(x))), 1))


def make(seed: int = 0):
    torch.manual_seed(seed)
    return randomize(KWSDS1d(), seed), (1, 40, 49)
