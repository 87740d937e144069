"""A tiny recurrent classifier over 20 frames of 8 features, (N, 20, 8): an LSTM over the sequence, a GRU over
the LSTM's outputs, the GRU's last step into a linear layer (both with batch_first=True, single layer)."""

import torch
import torch.nn as nn

from .seeded import randomize


class RNNTiny(nn.Module):
    def __init__(self, features=8, hidden=16, classes=4):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        return self.fc(y[:, -1])


def make(seed: int = 0):
    torch.manual_seed(seed)
    return randomize(RNNTiny(), seed), (1, 20, 8)
