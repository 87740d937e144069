"""Symmetrical classifier layer: class weight vectors that are unit, coplanar and sum to zero.

Paper: I. Kansizoglou, L. Bampis, A. Gasteratos, "Do Neural Network Weights Account for Classes Centers?",
IEEE Transactions on Neural Networks and Learning Systems, 2022 (arXiv:2104.07004; official code:
github.com/IoannisKansizoglou/Symmetrical-Feature-Space, ``model.py``, class ``SymmetricalLayer``).

Margin-based feature-learning losses (NormFace, CosFace, ArcFace) score a feature f against class c through
the cosine between f and the last layer's weight row w_c, i.e. they treat w_c as the centre of class c's
features. The paper shows this need not hold for an unconstrained last layer, which makes training less
stable, and proves that it does hold when the C weight rows are

* unit:       ||w_c|| = 1,
* coplanar:   all w_c lie in one 2-D subspace (rank W = 2 for C >= 3),
* balanced:   sum_c w_c = 0,

i.e. when they are the vertices of a regular C-gon centred at the origin. With an orthonormal pair (u, v)
spanning the plane and theta_c = 2 pi c / C:

    w_c = cos(theta_c) u + sin(theta_c) v,        <w_i, w_j> = cos(2 pi (i - j) / C),
    logits = s * W f_hat,   f_hat = f / ||f||     (``normalize=True``; ``normalize=False``: s * W f)

Fixed or constrained? The brief for this module said the paper fixes the polygon. The authors' released code
does not: ``SymmetricalLayer`` holds a trainable 2 x d parameter (two vectors), orthonormalises it
(Gram-Schmidt) into (n1, n2) and builds w_c = R(theta_c) n1 with the planar rotation
R(theta) = I + (n2 n1^T - n1 n2^T) sin(theta) + (n1 n1^T + n2 n2^T)(cos(theta) - 1), which equals
cos(theta_c) n1 + sin(theta_c) n2; the README calls it a layer that "secures complete symmetry among the
weight vectors during the entire training procedure". So the paper's layer is *constrained*: the symmetry is
exact at every step, the plane (and the polygon's rotation inside it) is learned. Both are here:

* ``fixed=True`` (default): (u, v) is an orthonormal pair drawn from a seeded Gaussian (QR), stored as a
  buffer; nothing in the head trains (a fixed classifier in the sense of Pernici et al.'s Regular Polytope
  Networks, but with the polygon of this paper). Deterministic, no parameters, trivially exportable.
* ``fixed=False``: the paper's parametrisation, a trainable ``basis`` (2 x d) orthonormalised in every
  forward pass; the rows stay an exact regular polygon whatever the optimiser does.

The scale s (``scale``, default 16 as in the official code) is a constant.

:class:`ArcMarginLoss` is ArcFace's additive angular margin (Deng et al., CVPR 2019) on the cosines of any head
whose rows are unit vectors (:class:`SymmetricHead`, :class:`CosineHead`); with margin 0 it is softmax
cross-entropy on s * cos. Plain ``F.cross_entropy(head(f), y)`` works as well.

Export. edgepack has no vector-norm operator, so :func:`export_ready` replaces every head with a plain
``nn.Linear`` whose constant weight is s * W (bias-free). With ``normalize=False`` the logits are identical;
with ``normalize=True`` the exported logits are ||f|| times the trained ones (the feature normalisation is
dropped), which keeps the class ranking (argmax, top-k) since ||f|| > 0, and cosines are recovered by dividing
by s ||f|| where needed. An ArcFace margin is a training-time loss only and never reaches the exported graph.

:func:`class_centre_cosines` measures the paper's question directly: for each class c, the cosine between w_c
and the mean feature of class c. examples/symmetric_head.py compares the head with trainable ones on MNIST-5k
(there it costs accuracy, 10 classes sharing one plane, and does not reduce the seed-to-seed loss spread).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def polygon_weights(u: torch.Tensor, v: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The C x d matrix with rows w_c = cos(2 pi c / C) u + sin(2 pi c / C) v (u, v orthonormal)."""
    theta = 2 * math.pi * torch.arange(num_classes, dtype=u.dtype, device=u.device) / num_classes
    return torch.cos(theta)[:, None] * u[None, :] + torch.sin(theta)[:, None] * v[None, :]


def _orthonormal_pair(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12):
    """Gram-Schmidt: n1 = a / ||a||, n2 = (b - <n1, b> n1) / ||.|| (the official code's ``rotateNd``)."""
    n1 = a / a.norm().clamp_min(eps)
    b = b - torch.dot(n1, b) * n1
    return n1, b / b.norm().clamp_min(eps)


class SymmetricHead(nn.Module):
    """Classifier whose class weight rows form a regular C-gon (unit, coplanar, summing to zero).

    ``logits = scale * W f_hat`` with W (num_classes x in_features), rows
    ``w_c = cos(2 pi c / C) u + sin(2 pi c / C) v`` for an orthonormal pair (u, v), and
    ``f_hat = f / ||f||`` when ``normalize`` (the paper's setting; needed for an angular margin loss), else f.

    ``fixed=True``: (u, v) from ``torch.randn(2, in_features)`` under ``torch.Generator().manual_seed(seed)``,
    orthonormalised, stored as a buffer: no trainable parameters. ``fixed=False``: the paper's constrained
    layer, a trainable ``basis`` (2 x in_features, same seeded start) orthonormalised in every forward pass.
    ``bias=True`` adds a trainable per-class bias (not in the paper; the default is bias-free).

    ``cosine(f)`` returns W f_hat (cosines in [-1, 1] when ``normalize``), for :class:`ArcMarginLoss`.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0, fixed: bool = True,
                 normalize: bool = True, seed: int = 0, bias: bool = False):
        super().__init__()
        if in_features < 2:
            raise ValueError(f"SymmetricHead: in_features={in_features}; the polygon needs a 2-D plane")
        if num_classes < 2:
            raise ValueError(f"SymmetricHead: num_classes={num_classes}; need at least 2 classes")
        self.in_features, self.num_classes = in_features, num_classes
        self.scale, self.fixed, self.normalize = float(scale), fixed, normalize
        g = torch.Generator().manual_seed(seed)
        start = torch.randn(2, in_features, generator=g, dtype=torch.float32)
        if fixed:
            u, v = _orthonormal_pair(start[0], start[1])
            self.register_buffer("basis", torch.stack([u, v]))
        else:
            self.basis = nn.Parameter(start)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        """W (num_classes x in_features), unit rows; differentiable w.r.t. ``basis`` when not fixed."""
        u, v = (self.basis[0], self.basis[1]) if self.fixed else _orthonormal_pair(self.basis[0], self.basis[1])
        return polygon_weights(u, v, self.num_classes)

    def cosine(self, f: torch.Tensor) -> torch.Tensor:
        x = F.normalize(f, dim=1) if self.normalize else f
        return F.linear(x, self.weight)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        out = self.scale * self.cosine(f)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, scale={self.scale}, "
                f"fixed={self.fixed}, normalize={self.normalize}, bias={self.bias is not None}")


class CosineHead(nn.Module):
    """Trainable cosine classifier (NormFace / ArcFace head): ``logits = scale * W_hat f_hat`` with every row
    of a free weight matrix normalised, ``W_hat = W / ||W||_row``. The unconstrained baseline the paper
    compares against: unit rows, but neither coplanar nor balanced."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0, seed: int | None = None):
        super().__init__()
        self.in_features, self.num_classes, self.scale = in_features, num_classes, float(scale)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        w = torch.randn(num_classes, in_features, generator=g) / math.sqrt(in_features)
        self.raw_weight = nn.Parameter(w)

    @property
    def weight(self) -> torch.Tensor:
        return F.normalize(self.raw_weight, dim=1)

    def cosine(self, f: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(f, dim=1), self.weight)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(f)


class ArcMarginLoss(nn.Module):
    """ArcFace additive angular margin loss (J. Deng, J. Guo, N. Xue, S. Zafeiriou, "ArcFace: Additive Angular
    Margin Loss for Deep Face Recognition", CVPR 2019) on cosines ``cos(theta_j) = <w_j, f_hat>``:

        L = CE(s * z, y),   z_j = cos(theta_j) for j != y,   z_y = psi(theta_y),
        psi(theta) = cos(theta + m)                   if theta + m <= pi,
                     cos(theta) - m sin(m)            otherwise (the reference code's fallback, which keeps
                                                       psi decreasing in theta past pi - m).

    ``forward(cosine, target)`` takes the (N, C) cosines (a head's ``cosine(f)``), not logits. With m = 0 it is
    ``F.cross_entropy(s * cosine, target)``. Usable with any head whose rows are unit vectors and whose
    features are normalised, so that the inputs are true cosines.
    """

    def __init__(self, scale: float = 16.0, margin: float = 0.3, eps: float = 1e-7):
        super().__init__()
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"ArcMarginLoss: margin={margin}; expected 0 <= m < pi/2 (radians)")
        self.scale, self.margin, self.eps = float(scale), float(margin), eps
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)  # cos(theta) > th  <=>  theta + m < pi
        self.mm = math.sin(margin) * margin

    def logits(self, cosine: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """s * z, the margin-adjusted logits the cross-entropy sees."""
        if self.margin == 0:
            return self.scale * cosine
        c = cosine.gather(1, target[:, None]).clamp(-1 + self.eps, 1 - self.eps)
        s = torch.sqrt((1 - c * c).clamp_min(self.eps))
        psi = torch.where(c > self.th, c * self.cos_m - s * self.sin_m, c - self.mm)
        return self.scale * cosine.scatter(1, target[:, None], psi)

    def forward(self, cosine: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(cosine, target), target)


def _head_as_linear(head: nn.Module) -> nn.Linear:
    with torch.no_grad():
        w = (head.scale * head.weight).detach().clone().float()
        bias = getattr(head, "bias", None)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        lin.weight.copy_(w)
        if bias is not None:
            lin.bias.copy_(bias.detach())
    lin.weight.requires_grad_(False)
    if lin.bias is not None:
        lin.bias.requires_grad_(False)
    return lin.to(w.device)


def export_ready(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in which every :class:`SymmetricHead` / :class:`CosineHead` (or ``module`` itself if
    it is one) is a plain ``nn.Linear`` with the constant weight s * W (and the head's bias, if any), so that
    ``torch.export`` gives an ``aten.linear`` edgepack builds. The feature normalisation is dropped: exported
    logits are s * W f = ||f|| * (trained logits) when the head normalised, the trained logits otherwise; the
    class ranking is the same in both cases. The original module is not modified."""
    if isinstance(module, (SymmetricHead, CosineHead)):
        return _head_as_linear(module)
    out = copy.deepcopy(module)
    for name, child in list(out.named_modules()):
        for cname, c in list(child.named_children()):
            if isinstance(c, (SymmetricHead, CosineHead)):
                setattr(child, cname, _head_as_linear(c))
    return out.eval()


def class_centre_cosines(features, labels, weight) -> np.ndarray:
    """For each class c: cos(w_c, mu_c) with mu_c the mean of the features labelled c,
    ``<w_c, mu_c> / (||w_c|| ||mu_c||)``. ``features`` (N, d), ``labels`` (N,), ``weight`` (C, d); numpy or torch.
    A class with no sample gives NaN."""
    f = np.asarray(features.detach().cpu() if torch.is_tensor(features) else features, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if torch.is_tensor(labels) else labels).astype(np.int64)
    w = np.asarray(weight.detach().cpu() if torch.is_tensor(weight) else weight, dtype=np.float64)
    out = np.full(w.shape[0], np.nan)
    for c in range(w.shape[0]):
        sel = y == c
        if sel.any():
            mu = f[sel].mean(axis=0)
            out[c] = float(w[c] @ mu / max(np.linalg.norm(w[c]) * np.linalg.norm(mu), 1e-30))
    return out
