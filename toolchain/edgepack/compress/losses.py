"""Training losses: the compressibility loss.

Paper: C. Aytekin, F. Cricri, M. M. Hannuksela, "Compressibility Loss for Neural Network Weights" (2019).

For a weight vector w (all weights of one layer, or of one output channel with ``per="channel"``):

    C(w) = ||w||_1 / ||w||_2

the negated sparsity measure. C is invariant to the scale of w, lies in [1, sqrt(n)], and its gradient

    dC/dw_i = sign(w_i) / ||w||_2  -  ||w||_1 * w_i / ||w||_2^3

vanishes on the support of w exactly when every nonzero |w_i| equals ||w||_2^2 / ||w||_1: at any critical
point w is ternary, {-a, 0, +a}, and C(w) = sqrt(number of nonzeros). Minimising it drives the small weights
of a layer to zero and the others to a common magnitude: sparse, low-entropy weights that compress (zlib) and,
once int8-quantized, store as sparse rows (``edgepack build --weights sparse``, pack/sparse.py).

Use in any training loop: ``loss = ce + compressibility_loss(model, lam)``; the total is
lam * sum over the model's conv / linear layers of C(layer weights) (``per="channel"``: the sum over output
channels of C(channel weights)). The gradient is the plain autograd gradient of the formula (C is not
differentiable where some w_i = 0; autograd uses sign(0) = 0 there, a valid subgradient).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["compressibility", "compressibility_loss", "weight_layers"]

_EPS = 1e-12


def compressibility(w: torch.Tensor, per: str = "layer") -> torch.Tensor:
    """||w||_1 / ||w||_2 of the whole tensor (``per="layer"``), or the sum over output channels (dim 0) of each
    channel's ratio (``per="channel"``). Differentiable."""
    if per == "layer":
        v = w.reshape(-1)
        return v.abs().sum() / (v.norm() + _EPS)
    if per == "channel":
        v = w.reshape(w.shape[0], -1)
        return (v.abs().sum(dim=1) / (v.norm(dim=1) + _EPS)).sum()
    raise ValueError(f"per must be 'layer' or 'channel', got {per!r}")


def weight_layers(model: nn.Module, types=(nn.Conv2d, nn.Linear), skip=()) -> list:
    """(name, module) of the model's layers the loss applies to: modules of ``types`` with a ``weight``,
    names in ``skip`` left out."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, types) and n not in set(skip)
            and getattr(m, "weight", None) is not None]


def compressibility_loss(model: nn.Module, lam: float = 1.0, per: str = "layer", types=(nn.Conv2d, nn.Linear),
                         skip=(), normalize: bool = False) -> torch.Tensor:
    """lam * sum over the layers of ``model`` (conv / linear by default; a single such module works too) of
    C(weights). ``normalize`` divides each layer's term by sqrt(its number of weights) (so every layer
    counts in [0, 1] whatever its size; the paper sums the plain terms)."""
    layers = weight_layers(model, types, skip)
    if not layers and isinstance(model, types):
        layers = [("", model)]
    if not layers:
        raise ValueError("compressibility_loss: the model has no conv / linear layer with weights")
    total = None
    for _, m in layers:
        c = compressibility(m.weight, per)
        if normalize:
            c = c / math.sqrt(m.weight.numel() if per == "layer" else m.weight[0].numel())
        total = c if total is None else total + c
    return lam * total
