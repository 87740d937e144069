"""Training-side binarization: ReCU (Xu et al., ICCV 2021) and a plain sign + STE baseline.

Paper: Z. Xu, M. Lin, J. Liu, J. Chen, L. Shao, Y. Gao, Y. Tian, R. Ji, "ReCU: Reviving the Dead Weights in
Binary Neural Networks", ICCV 2021 (official code: github.com/z-hXu/ReCU).

A binary layer computes ``conv(sign(x), alpha_c * sign(w'))`` (or ``linear``): 1-bit activations, 1-bit
weights with one scale per output channel (exported as the two values +-|alpha_c|). Everywhere in this module
sign(0) = +1, for weights and activations alike (``where(v >= 0, 1, -1)``, never ``torch.sign``, whose sign(0)
is 0); edgepack's importer and integer kernels use the same convention.

method="recu" (what the paper does to the latent float weights w of one layer, out-channel c):

1. Weight standardization, per output channel (Qiao et al.; the official code standardizes over dims 1..3):
       w_hat = (w - mean_c(w)) / sqrt(var_c(w) + 1e-5)
   The official code further multiplies by 2*sqrt(2) (so that the Laplace scale b = E|w_hat| is about 2);
   that constant changes neither sign(w') nor which weights are clamped (the bounds scale with it) and only
   rescales alpha, which the following BatchNorm absorbs, so it is left out here.
2. ReCU, the rectified clamp of the standardized weights to the layer's tau-quantiles:
       w' = ReCU(w_hat) = max(min(w_hat, Q(tau)), Q(1 - tau))
   Q(p) is the p-quantile of all standardized weights of the layer (one pair of bounds per layer; the
   bounds are constants for autograd, like the official ``.detach()``), so a fraction 1 - tau of the
   weights sits at each bound. The "dead weights" of the paper are these tail weights: their magnitude is
   so large that their sign practically never flips; clamping them moves them to the quantiles.
   ``quantile="empirical"`` (the layers' constructor default) uses the exact sample quantiles (linear interpolation, as
   ``torch.quantile``); ``quantile="laplace"`` uses the paper's Laplace estimate, as the official code does:
       Q(tau) = -b * ln(2 - 2*tau),  Q(1 - tau) = -Q(tau),  b = mean |w_hat| (the Laplace scale's MLE).
3. tau grows over training on the paper's exponential schedule (``TauSchedule``), from tau_start = 0.85 to
   tau_end = 0.99 (the paper's values): step t of T,
       tau(t) = A * e^(t/T) + B,  A = (tau_end - tau_start) / (e - 1),  B = tau_start - A
   i.e. tau(t) = tau_start + (tau_end - tau_start) * (e^(t/T) - 1) / (e - 1): tau(0) = tau_start,
   tau(T) = tau_end, increasing, slowly first (the official code evaluates it once per epoch, t = epoch;
   ``train_binary`` evaluates it per optimizer step, same curve).
4. Binary weight: w_b = alpha_c * sign(w'), one scale per output channel c, two choices (``scale``):
   - ``scale="closed"`` (default): alpha_c = mean_i |w'_{c,i}| (mean absolute value of the clamped weights of
     output channel c, XNOR-Net's closed form; gradients flow through alpha_c);
   - ``scale="learned"`` (the official code): alpha_c is a free parameter (``learned_alpha``, shape (out,),
     initialised U(0, 1) like the official ``torch.rand``), trained by backprop: d L/d alpha_c =
     sum over channel c's outputs of g * (conv(x_b, sign(w')))_c. The official code multiplies the conv
     output by alpha (its convs have no bias); here alpha multiplies the weight, conv(x_b, alpha_c *
     sign(w')) + bias, which is the same thing without a bias and keeps the layer exportable as two-valued
     weights: export folds the learned alpha_c into W. A learned alpha_c may become negative: W's row c then
     holds -|alpha_c| where w' >= 0 and +|alpha_c| elsewhere (still exactly two values +-|alpha_c|);
     |alpha_c| is kept >= 1e-8 (forward and export alike) so that a row never collapses to zeros.
   The weight sign has the identity straight-through estimator, d sign(w')/d w' = 1 (the official
   ``BinaryQuantize``); the clamp itself passes no gradient outside [Q(1-tau), Q(tau)].
5. Activations: x_b = sign(a0) (forward: sign(x), always), with one of two gradient estimators (``act_grad``)
   - ``act_grad="clipped"`` (the layers' constructor default): d x_b/d a0 = 1{|a0| <= 1} (BNN's clipped STE, hardtanh's gradient);
   - ``act_grad="approxsign"`` (Bi-Real's ApproxSign, what the official code uses; binarize()'s default):
         d x_b/d a0 = max(0, 2 - 2|a0|)
     (the derivative of the piecewise quadratic F(a) = 2a - a|a| for |a| <= 1, sign(a) outside; zero for
     |a0| >= 1, 2 at a0 = 0).
   and a0 = x, or with ``act_norm=True`` (the official code) in training mode only
         h = hardtanh(x) = clamp(x, -1, 1),   a0 = h / sqrt(var_n(h) + 1e-5)
   with var_n the (unbiased) variance of sample n's whole activation tensor (dims 1.., as the official
   ``a.var([1,2,3])``), differentiated through (not detached). The hardtanh is there because the official
   models put one before every binary conv; edgepack's binary models may drop it (sign(hardtanh(x)) =
   sign(x)), and hardtanh(hardtanh(x)) = hardtanh(x) makes it harmless where a model keeps it. Without
   act_norm that hardtanh changes no gradient (both estimators vanish for |x| > 1) and is left out. In
   eval mode a0 = x. Neither option changes the forward pass: sign(a0) = sign(x) (sign(0) = +1).
   The official code also rescales the standardized weights by 2*sqrt(2) (see 1.); with the learned scale
   that constant only rescales the gradient of the latent weights, which Adam (the optimizer used here)
   does not see.

Faithful official recipe: ``method="recu", quantile="laplace", scale="learned", act_grad="approxsign",
act_norm=True`` with the exponential tau schedule 0.85 -> 0.99. :func:`binarize`'s defaults are that recipe
with the closed-form alpha, plus a learned per-channel threshold before every sign (6. below): the best
measured on an ordinary conv-BN-ReLU residual CNN (examples/binary_resnet.py, table in its docstring and the
README). ReCU's own parts stay separately switchable (``standardize=False``, ``clamp=False``; tau only acts
through the clamp).

6. Activation threshold (``act_threshold="learned"``, ReActNet's RSign, Liu et al., ECCV 2020): the binary
   input is sign(x - b_c), b_c one learned parameter per input channel, initialised from the data (the mean
   of channel c over the first training batch, :func:`init_thresholds`; ``train_binary`` does it). A binary
   layer fed by a ReLU (or any non-negative op) would otherwise see sign(x) = +1 everywhere and learn
   nothing; with ``act_threshold="none"`` :func:`binarize` warns, naming the layer. The threshold exports as a
   constant add before the sign, which the importer turns into one integer threshold per channel (the int8
   binarize kernel compares q >= zp + ceil(b_c / s); between two binary layers it folds into the previous
   layer's popcount threshold), and a ReLU in front of a threshold inside its range is dropped
   (sign(relu(y) - b) = sign(y - b) for b > 0): exact and free at inference.

method="ste" (the BNN / XNOR-Net baseline): w_b = alpha_c * sign(w), alpha_c = mean_i |w_{c,i}|, identity STE
for the weight sign; no standardization, no clamp, no tau. It takes the same activation path options
(act_grad, act_norm, act_threshold, scale) as ReCU, so that ReCU against STE compares ReCU's own weight parts on
one recipe.

Training (:func:`train_binary`): Adam with a cosine (or one-cycle) LR schedule, optionally distillation from
the float model (``teacher=``, :func:`distill_loss`) and the two-step schedule (``two_step=``).

Deployment: ``export_ready(model)`` materialises each binary layer as ``F.conv2d(torch.sign(x + shift), W, b)``
(or ``F.linear``; shift = -b_c, left out without a threshold) with W a constant whose entries are exactly +alpha_c or -alpha_c, which is the pattern the
edgepack importer recognises as a binary layer.
"""

from __future__ import annotations

import copy
import math
import operator
import warnings
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BinaryConv2d", "BinaryLinear", "DeadBinaryInputWarning", "RPReLU", "TauSchedule", "act_std_norm", "binarize",
           "binary_layers", "distill_loss", "export_ready", "init_thresholds", "quantile_clamp", "reestimate_bn",
           "set_tau", "sign_approx", "sign_ste", "standardize_weight", "train_binary"]

METHODS = ("recu", "ste")
ACT_GRADS = ("clipped", "approxsign")
SCALES = ("closed", "learned")
THRESHOLDS = ("learned", "none")
_ALPHA_MIN = 1e-8  # a channel of all-zero weights still gets a positive (if useless) scale


# ---- the pieces ----------------------------------------------------------------------------------------
def _pm1(v: torch.Tensor) -> torch.Tensor:
    """+1 where v >= 0, else -1 (sign(0) = +1), in v's dtype."""
    return torch.where(v >= 0, torch.ones_like(v), -torch.ones_like(v))


class _SignAct(torch.autograd.Function):
    """sign(x) with sign(0) = +1; backward: the clipped straight-through estimator 1{|x| <= 1}, or with
    ``approx`` Bi-Real's ApproxSign gradient max(0, 2 - 2|x|)."""

    @staticmethod
    def forward(ctx, x, approx: bool):
        ctx.save_for_backward(x)
        ctx.approx = approx
        return _pm1(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        d = (2 - 2 * x.abs()).clamp_min(0) if ctx.approx else (x.abs() <= 1)
        return g * d.to(g.dtype), None


class _SignWeightSTE(torch.autograd.Function):
    """sign(w) with sign(0) = +1; backward: identity (the official ReCU ``BinaryQuantize``)."""

    @staticmethod
    def forward(ctx, w):
        return _pm1(w)

    @staticmethod
    def backward(ctx, g):
        return g


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """Binary activation: +1 where x >= 0 else -1; gradient 1 where |x| <= 1, 0 elsewhere."""
    return _SignAct.apply(x, False)


def sign_approx(x: torch.Tensor) -> torch.Tensor:
    """Binary activation: +1 where x >= 0 else -1; gradient max(0, 2 - 2|x|) (Bi-Real's ApproxSign)."""
    return _SignAct.apply(x, True)


def act_std_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The official ReCU training-time activation normalisation, with the hardtanh its models put before
    every binary conv: h = clamp(x, -1, 1), h / sqrt(var_n(h) + eps), var_n over each sample's dims 1..
    (unbiased, differentiable). Positive per-sample factor, so the sign of the result is sign(x)."""
    h = torch.clamp(x, -1.0, 1.0)
    dims = tuple(range(1, x.dim()))
    return h / torch.sqrt(h.var(dim=dims, keepdim=True) + eps)


def sign_weight_ste(w: torch.Tensor) -> torch.Tensor:
    """Binary weight sign: +1 where w >= 0 else -1; identity gradient."""
    return _SignWeightSTE.apply(w)


def standardize_weight(w: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Weight standardization per output channel (dim 0): (w - mean_c) / sqrt(var_c + eps), var unbiased as
    in the official code (``Tensor.var``); differentiable."""
    dims = tuple(range(1, w.dim()))
    w0 = w - w.mean(dim=dims, keepdim=True)
    var = w0.var(dim=dims, keepdim=True) if w[0].numel() > 1 else torch.zeros_like(w0)
    return w0 / torch.sqrt(var + eps)


def _quantile(v: torch.Tensor, q: float) -> float:
    """Sample q-quantile of all entries (linear interpolation, as torch.quantile, without its 2^24 limit)."""
    s = torch.sort(v.detach().reshape(-1)).values
    pos = q * (s.numel() - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, s.numel() - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def recu_bounds(w_hat: torch.Tensor, tau: float, quantile: str = "empirical") -> tuple:
    """(Q(1 - tau), Q(tau)) of the layer's standardized weights, as Python floats (constants for autograd)."""
    tau = float(tau)
    if not 0.5 <= tau <= 1.0:
        raise ValueError(f"ReCU tau must lie in [0.5, 1], got {tau}")
    if quantile == "empirical":
        return _quantile(w_hat, 1.0 - tau), _quantile(w_hat, tau)
    if quantile == "laplace":
        if tau >= 1.0:
            return -math.inf, math.inf
        b = float(w_hat.detach().abs().mean())
        q = -b * math.log(2.0 - 2.0 * tau)
        return -q, q
    raise ValueError(f"quantile must be 'empirical' or 'laplace', got {quantile!r}")


def quantile_clamp(w_hat: torch.Tensor, tau: float, quantile: str = "empirical") -> torch.Tensor:
    """ReCU(w_hat) = max(min(w_hat, Q(tau)), Q(1 - tau)) with the layer's quantiles (see module docstring)."""
    lo, hi = recu_bounds(w_hat, tau, quantile)
    return torch.clamp(w_hat, lo, hi)


# ---- layers ----------------------------------------------------------------------------------------------
def _check_options(method: str, quantile: str, act_grad: str, scale: str, act_norm: bool,
                   act_threshold: str = "none", standardize=None, clamp=None) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if quantile not in ("empirical", "laplace"):
        raise ValueError(f"quantile must be 'empirical' or 'laplace', got {quantile!r}")
    if act_grad not in ACT_GRADS:
        raise ValueError(f"act_grad must be one of {ACT_GRADS}, got {act_grad!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if act_threshold not in THRESHOLDS:
        raise ValueError(f"act_threshold must be one of {THRESHOLDS}, got {act_threshold!r}")
    if method == "ste" and (standardize or clamp):
        raise ValueError("weight standardization and the quantile clamp are ReCU's own parts; method='ste' is the "
                         "plain sign(w) baseline (use method='recu' with standardize= / clamp= to ablate them)")


def _recu_parts(method: str, standardize, clamp) -> tuple:
    """(standardize, clamp) of a layer: ReCU's own weight parts, both on for method='recu' unless switched off,
    both off for method='ste'."""
    if method == "ste":
        return False, False
    return (True if standardize is None else bool(standardize)), (True if clamp is None else bool(clamp))


class _BinaryMixin:
    """Shared weight and input path of BinaryConv2d / BinaryLinear. Attributes: method, quantile, act_grad,
    scale, act_norm, act_threshold, standardize, clamp, binary_weights (False in the first step of the two-step
    schedule: real weights), buffer tau; with scale='learned' the parameter learned_alpha (shape (out,)); with
    act_threshold='learned' the parameter act_bias (b, shape (in,)) and the buffer act_bias_ready."""

    def _init_binary(self, method: str, tau: float, quantile: str, act_grad: str = "clipped",
                     scale: str = "closed", act_norm: bool = False, act_threshold: str = "none",
                     standardize=None, clamp=None):
        _check_options(method, quantile, act_grad, scale, act_norm, act_threshold, standardize, clamp)
        self.method = method
        self.quantile = quantile
        self.act_grad = act_grad
        self.scale = scale
        self.act_norm = bool(act_norm)
        self.act_threshold = act_threshold
        self.standardize, self.clamp = _recu_parts(method, standardize, clamp)
        self.binary_weights = True
        self.register_buffer("tau", torch.tensor(float(tau)))
        w = self.weight
        if scale == "learned":
            self.learned_alpha = nn.Parameter(torch.rand(w.shape[0], device=w.device, dtype=w.dtype))
        else:
            self.learned_alpha = None
        if act_threshold == "learned":
            n_in = self.in_channels if isinstance(self, nn.Conv2d) else self.in_features
            self.act_bias = nn.Parameter(torch.zeros(n_in, device=w.device, dtype=w.dtype))
            self.register_buffer("act_bias_ready", torch.tensor(False))
        else:
            self.act_bias = None

    def _bias_view(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_bias.reshape((1, -1) + (1,) * (x.dim() - 2))

    @torch.no_grad()
    def init_act_bias(self, x: torch.Tensor) -> None:
        """RSign's data-dependent initialisation: b_c = mean of input channel c over the batch and positions
        (a ReLU-fed channel that is not all zero gets b_c > 0, so sign(x - b_c) takes both values)."""
        dims = (0,) + tuple(range(2, x.dim()))
        self.act_bias.copy_(x.detach().mean(dim=dims).to(self.act_bias.dtype))
        self.act_bias_ready.fill_(True)

    def sign_input(self, x: torch.Tensor) -> torch.Tensor:
        """The tensor whose sign is the binary input: x - b (learned per-channel threshold, RSign) or x.
        In training mode an uninitialised threshold is first initialised from x (:meth:`init_act_bias`)."""
        if self.act_bias is None:
            return x
        if self.training and not bool(self.act_bias_ready):
            self.init_act_bias(x)
        return x - self._bias_view(x)

    def binary_input(self, x: torch.Tensor) -> torch.Tensor:
        """sign(x - b) (sign(0) = +1; b the learned threshold, or 0) with the layer's activation gradient
        estimator (and, in training mode with act_norm, the official per-sample std normalisation in front)."""
        x = self.sign_input(x)
        if self.act_norm and self.training:
            x = act_std_norm(x)
        return sign_approx(x) if self.act_grad == "approxsign" else sign_ste(x)

    def _copy_float(self, m):
        """Take the float layer ``m``'s weight, bias and train / eval mode; returns self."""
        with torch.no_grad():
            self.weight.copy_(m.weight)
            if m.bias is not None:
                self.bias.copy_(m.bias)
        self.train(m.training)
        return self

    def set_tau(self, tau: float) -> None:
        """Set ReCU's tau (used by the clamp only)."""
        if not 0.5 <= float(tau) <= 1.0:
            raise ValueError(f"ReCU tau must lie in [0.5, 1], got {tau}")
        self.tau.fill_(float(tau))

    def latent_weight(self) -> torch.Tensor:
        """w' : the weight whose sign is taken (ReCU: standardized, then clamped to the quantiles; each part
        switchable; method='ste': w itself)."""
        w = self.weight
        if self.standardize:
            w = standardize_weight(w)
        if self.clamp:
            w = quantile_clamp(w, float(self.tau), self.quantile)
        return w

    def alpha(self, w_latent: torch.Tensor | None = None) -> torch.Tensor:
        """Per-output-channel scale, shape (out,): alpha_c = mean_i |w'_{c,i}| (scale='closed', > 0), or the
        learned parameter with |alpha_c| kept >= 1e-8 (scale='learned'; may be negative)."""
        if self.scale == "learned":
            a = self.learned_alpha
            return torch.where(a.abs() >= _ALPHA_MIN, a, _pm1(a) * _ALPHA_MIN)
        w = self.latent_weight() if w_latent is None else w_latent
        return w.abs().reshape(w.shape[0], -1).mean(dim=1).clamp_min(_ALPHA_MIN)

    def binary_weight(self) -> torch.Tensor:
        """alpha_c * sign(w') (sign(0) = +1), differentiable through the STE and alpha; the real weight w
        while ``binary_weights`` is False (first step of the two-step schedule)."""
        if not self.binary_weights:
            return self.weight
        w = self.latent_weight()
        a = self.alpha(w).reshape((-1,) + (1,) * (w.dim() - 1))
        return a * sign_weight_ste(w)

    def extra_repr(self):
        tail = (f", tau={float(self.tau):.4f}, quantile={self.quantile}" if self.clamp else "")
        tail += (f", standardize={self.standardize}, clamp={self.clamp}, act_grad={self.act_grad}, "
                 f"scale={self.scale}, act_norm={self.act_norm}, act_threshold={self.act_threshold}")
        return super().extra_repr() + f", method={self.method}{tail}"


_LAYER_OPTS = ("method", "tau", "quantile", "act_grad", "scale", "act_norm", "act_threshold", "standardize",
               "clamp")


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """Conv2d with 1-bit input and weights: conv(sign(x - b), alpha_c * sign(w')) + bias (gradient estimators,
    alpha and the threshold b per the options, see the module docstring). The constructor's defaults are the
    plain layer (b = 0, clipped STE); :func:`binarize` applies the measured recipe.

    Zero padding pads the binarized input with 0 (not +-1), as F.conv2d does; edgepack's binary kernels
    handle such padding exactly."""

    def __init__(self, *args, method: str = "recu", tau: float = 0.85, quantile: str = "empirical",
                 act_grad: str = "clipped", scale: str = "closed", act_norm: bool = False,
                 act_threshold: str = "none", standardize=None, clamp=None, **kw):
        super().__init__(*args, **kw)
        if self.padding_mode != "zeros":
            raise ValueError("BinaryConv2d supports padding_mode='zeros' only")
        self._init_binary(method, tau, quantile, act_grad, scale, act_norm, act_threshold, standardize, clamp)

    def forward(self, x):
        return self._conv_forward(self.binary_input(x), self.binary_weight(), self.bias)

    @classmethod
    def from_float(cls, m: nn.Conv2d, **opts):
        """A binary copy of ``m`` (its weights and bias, train / eval mode); ``opts`` as the constructor's
        (method, tau, quantile, act_grad, scale, act_norm, act_threshold, standardize, clamp)."""
        return cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                   dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
                   device=m.weight.device, dtype=m.weight.dtype, **opts)._copy_float(m)


class BinaryLinear(_BinaryMixin, nn.Linear):
    """Linear with 1-bit input and weights: linear(sign(x - b), alpha_c * sign(w')) + bias (options as
    BinaryConv2d; the threshold is per input feature)."""

    def __init__(self, *args, method: str = "recu", tau: float = 0.85, quantile: str = "empirical",
                 act_grad: str = "clipped", scale: str = "closed", act_norm: bool = False,
                 act_threshold: str = "none", standardize=None, clamp=None, **kw):
        super().__init__(*args, **kw)
        self._init_binary(method, tau, quantile, act_grad, scale, act_norm, act_threshold, standardize, clamp)

    def forward(self, x):
        return F.linear(self.binary_input(x), self.binary_weight(), self.bias)

    @classmethod
    def from_float(cls, m: nn.Linear, **opts):
        """A binary copy of ``m`` (options as BinaryConv2d.from_float)."""
        return cls(m.in_features, m.out_features, bias=m.bias is not None, device=m.weight.device,
                   dtype=m.weight.dtype, **opts)._copy_float(m)


_BINARY = (BinaryConv2d, BinaryLinear)


def set_tau(model: nn.Module, tau: float) -> int:
    """Set tau on every ReCU layer of ``model``; return how many layers took it."""
    n = 0
    for m in model.modules():
        if isinstance(m, _BINARY) and m.clamp:
            m.set_tau(tau)
            n += 1
    return n


# ---- model surgery ---------------------------------------------------------------------------------------
def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _execution_order(model: nn.Module, example_input, names: list) -> list:
    """Names of the given modules in the order a forward pass first calls them (modules never called are
    left out)."""
    order, hooks = [], []
    for name in names:
        def hook(mod, inp, out, name=name):
            if name not in order:
                order.append(name)
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            args = example_input if isinstance(example_input, tuple) else (example_input,)
            model(*args)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order


class DeadBinaryInputWarning(UserWarning):
    """A binary layer reads a tensor that is never negative (ReLU, ReLU6, sigmoid, ...) and has no learned
    threshold: sign(x) = +1 everywhere, the layer receives no information."""


# ops whose output is never negative, and ops that keep a non-negative input non-negative
_NONNEG_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softplus, nn.Hardsigmoid, nn.Softmax)
_NONNEG_FUNCS = {F.relu, F.relu6, torch.relu, torch.sigmoid, F.sigmoid, F.softplus, F.hardsigmoid, torch.abs,
                 torch.exp, F.softmax, torch.softmax, torch.square}
_NONNEG_METHODS = {"relu", "relu_", "sigmoid", "abs", "exp", "softmax", "square"}
_KEEP_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Dropout,
                 nn.Identity, nn.Upsample)
_KEEP_FUNCS = {torch.flatten, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
               F.dropout, torch.cat, torch.add, torch.mul, torch.mean, F.interpolate, operator.add, operator.mul,
               operator.getitem}
_KEEP_METHODS = {"flatten", "view", "reshape", "contiguous", "mean", "permute", "transpose", "add", "mul",
                 "clone", "detach"}


def _clip_nonneg(node) -> bool:
    """F.hardtanh / clamp / clip with a lower bound >= 0."""
    lo = None
    if node.op == "call_function" and node.target in (F.hardtanh, torch.clamp, torch.clip):
        lo = node.kwargs.get("min_val", node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None))
    elif node.op == "call_method" and node.target in ("clamp", "clip", "clamp_min"):
        lo = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
    return isinstance(lo, (int, float)) and lo >= 0


def _nonnegative_feeders(model: nn.Module, names: list) -> dict | None:
    """For each module name whose (first) input is never negative by construction: name -> the op that makes
    it so (e.g. "b1.2 (ReLU)"). Found by tracing the model with torch.fx; None when it cannot be traced."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:
        return None
    mods = dict(model.named_modules())
    memo = {}

    def why(node):
        """A description of the op that makes ``node`` non-negative, or None."""
        if not isinstance(node, torch.fx.Node):
            return None
        if node in memo:
            return memo[node]
        memo[node] = None
        r = None
        args = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, torch.fx.Node)]
        if node.op == "call_module":
            m = mods.get(node.target)
            if isinstance(m, _NONNEG_MODULES) or (isinstance(m, nn.Hardtanh) and m.min_val >= 0):
                r = f"{node.target} ({type(m).__name__})"
            elif isinstance(m, _KEEP_MODULES) and args:
                r = why(args[0])
        elif node.op == "call_function" and (node.target in _NONNEG_FUNCS or _clip_nonneg(node)):
            r = f"{node.name} ({getattr(node.target, '__name__', node.target)})"
        elif node.op == "call_method" and (node.target in _NONNEG_METHODS or _clip_nonneg(node)):
            r = f"{node.name} (.{node.target}())"
        elif ((node.op == "call_function" and node.target in _KEEP_FUNCS)
              or (node.op == "call_method" and node.target in _KEEP_METHODS)) and args:
            if node.target in (operator.getitem,) or node.target in ("view", "reshape", "flatten", "permute",
                                                                     "transpose", "contiguous", "clone",
                                                                     "detach", "mean"):
                r = why(args[0])
            else:
                parts = [why(a) for a in args]
                r = parts[0] if all(parts) else None
        memo[node] = r
        return r

    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in names and node.args:
            r = why(node.args[0])
            if r:
                out[node.target] = r
    return out


class RPReLU(nn.Module):
    """ReActNet's RPReLU (Liu et al., ECCV 2020): y = PReLU_c(x - gamma_c) + zeta_c, per channel c (axis 1),
    gamma and zeta learned (start at 0), the PReLU slope learned (starts at ``slope``). :func:`binarize` with
    ``rprelu=True`` puts it in place of each nn.ReLU module that feeds a binary layer, so the tensor a binary
    layer (and the residual path beside it) reads is signed and shifted per channel."""

    def __init__(self, channels: int, slope: float = 0.25):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.zeta = nn.Parameter(torch.zeros(channels))
        self.prelu = nn.PReLU(channels, init=slope)

    def _view(self, v, x):
        return v.reshape((1, -1) + (1,) * (x.dim() - 2))

    def forward(self, x):
        return self.prelu(x - self._view(self.gamma, x)) + self._view(self.zeta, x)


class DeployRPReLU(nn.Module):
    """Exported RPReLU: ``F.prelu(x + shift_in, slope) + shift_out`` with constant buffers (shift_in = -gamma,
    shift_out = zeta): adds of a constant and a PReLU, which the importer reads as such (an add right before
    a sign becomes the sign's threshold)."""

    def __init__(self, m: RPReLU):
        super().__init__()
        shape = (1, -1, 1, 1)
        self.register_buffer("shift_in", (-m.gamma.detach().clone()).reshape(shape))
        self.register_buffer("shift_out", m.zeta.detach().clone().reshape(shape))
        self.register_buffer("slope", m.prelu.weight.detach().clone())

    def forward(self, x):
        return F.prelu(x + self.shift_in, self.slope) + self.shift_out


def _relu_modules_feeding(model: nn.Module, names: list) -> dict:
    """nn.ReLU modules whose output a binary-layer candidate in ``names`` reads (through pooling / dropout /
    identity only): ReLU name -> channel count (the conv's in_channels). Found by tracing with torch.fx; {} when
    the model cannot be traced. Linear layers are left out (their input is flattened)."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:
        return {}
    mods = dict(model.named_modules())
    out = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in names or not isinstance(mods[node.target], nn.Conv2d):
            continue
        src = node.args[0] if node.args else None
        while isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(
                mods.get(src.target), (nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Identity)):
            src = src.args[0]
        if isinstance(src, torch.fx.Node) and src.op == "call_module" and type(mods.get(src.target)) is nn.ReLU:
            out[src.target] = mods[node.target].in_channels
    return out


def binarize(model: nn.Module, first_last_int8: bool = True, method: str = "recu",
             skip: Iterable[str] | None = None, example_input=None, tau: float = 0.85,
             quantile: str = "laplace", act_grad: str = "approxsign", scale: str = "closed",
             act_norm: bool = True, act_threshold: str = "learned", standardize=None, clamp=None,
             rprelu: bool = False):
    """Replace the model's nn.Conv2d / nn.Linear modules by BinaryConv2d / BinaryLinear in place.

    Weights and biases are copied. With ``first_last_int8`` (default) the first and the last layer stay full
    precision (int8 after edgepack's quantization), as is usual for BNNs. First and last are taken in
    *execution order* when ``example_input`` (a tensor or a tuple of forward arguments) is given: one eval
    forward pass with hooks records which layer runs first and last (layers the pass never calls are left
    alone). Without ``example_input`` they are taken in *module registration order* (``named_modules()``),
    which equals execution order for nn.Sequential-style models defined in forward order.
    Also left alone: names in ``skip``, grouped (depthwise) convolutions (no binary grouped kernel), and
    convolutions with a padding_mode other than 'zeros'.

    The defaults are the recipe measured best (examples/binary_resnet.py): ReCU (standardization, Laplace
    quantile clamp, tau schedule), ApproxSign activation gradient, the official per-sample activation
    normalisation, closed-form alpha, and a learned per-channel threshold before every sign
    (``act_threshold="learned"``: sign(x - b_c), ReActNet's RSign; b_c starts at the mean of input channel c
    over the first training batch, so a binary layer fed by a ReLU sees both signs). With
    ``act_threshold="none"`` a binary layer whose input is never negative by construction (ReLU, ReLU6,
    sigmoid, ... found by tracing the model with torch.fx) gets a :class:`DeadBinaryInputWarning` naming it.

    ``tau``, ``quantile``, ``act_grad``, ``scale``, ``act_norm``, ``act_threshold``, ``standardize``,
    ``clamp``: the layers' options (module docstring). ``method="ste"`` is the sign(w) baseline on the same
    activation path (ReCU's own standardization and clamp off); ``standardize`` / ``clamp`` switch ReCU's
    parts off one at a time (default: on for ReCU).

    ``rprelu``: each nn.ReLU module that feeds a binary conv becomes :class:`RPReLU` (ReActNet), built as a
    PReLU and adds of a constant; off by default (examples/binary_resnet.py measures it).

    Returns ``(model, names)`` with the names of the binarized modules, in the order used.
    """
    _check_options(method, quantile, act_grad, scale, act_norm, act_threshold, standardize, clamp)
    opts = dict(method=method, tau=tau, quantile=quantile, act_grad=act_grad, scale=scale, act_norm=act_norm,
                act_threshold=act_threshold, standardize=standardize, clamp=clamp)
    skip = set(skip or ())
    cands = [n for n, m in model.named_modules()
             if type(m) in (nn.Conv2d, nn.Linear) and n]
    if example_input is not None:
        cands = _execution_order(model, example_input, cands)
    if first_last_int8:
        cands = cands[1:-1]
    chosen = []
    for name in cands:
        m = model.get_submodule(name)
        if name in skip or (isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros")):
            continue
        chosen.append(name)
    if act_threshold == "none" and chosen:
        for name, src in (_nonnegative_feeders(model, chosen) or {}).items():
            warnings.warn(f"binarize: layer '{name}' reads '{src}', which is never negative: sign(x) = +1 "
                          "everywhere and the layer gets no information; keep act_threshold='learned' (the "
                          "default) or feed it a signed tensor (e.g. drop that ReLU)", DeadBinaryInputWarning,
                          stacklevel=2)
    relus = _relu_modules_feeding(model, chosen) if rprelu else {}
    for name in chosen:
        m = model.get_submodule(name)
        cls = BinaryConv2d if isinstance(m, nn.Conv2d) else BinaryLinear
        _set_submodule(model, name, cls.from_float(m, **opts))
    for name, c in relus.items():
        w = next(model.parameters())
        _set_submodule(model, name, RPReLU(c).to(device=w.device, dtype=w.dtype))
    return model, chosen


def _first_inputs(data, n: int = 256):
    """Up to ``n`` inputs from the head of the training data ((x, y) arrays or tensors, a Dataset or a
    DataLoader), as one tensor: the same examples on every rank."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x = data[0][:n]
        return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if isinstance(data, Dataset):
        items = [data[i][0] for i in range(min(n, len(data)))]
        return torch.stack([torch.as_tensor(v) for v in items])
    raise TypeError("data must be (x, y) arrays, a Dataset or a DataLoader")


@torch.no_grad()
def init_thresholds(model: nn.Module, x, force: bool = False) -> list:
    """Initialise the learned thresholds (RSign) of ``model``'s binary layers from the statistics of their
    inputs on the batch ``x``: b_c = mean over the batch and positions of input channel c. Layers already
    initialised are kept unless ``force``. One forward pass in training mode with batchnorm statistics left
    unchanged. Returns the names of the layers initialised."""
    todo = {n: m for n, m in model.named_modules() if isinstance(m, _BINARY) and m.act_bias is not None
            and (force or not bool(m.act_bias_ready))}
    if not todo:
        return []
    done, hooks = [], []
    for name, m in todo.items():
        def hook(mod, args, name=name):
            if name not in done:
                mod.init_act_bias(args[0])
                done.append(name)
        hooks.append(m.register_forward_pre_hook(hook))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    was = model.training
    try:
        for m in bns:
            m.momentum = 0.0  # batch statistics for the forward, running statistics unchanged
        model.train()
        dev = next(model.parameters()).device
        model(torch.as_tensor(x).to(dev))
    finally:
        for h in hooks:
            h.remove()
        for m, mom in saved:
            m.momentum = mom
        model.train(was)
    return done


# ---- training -------------------------------------------------------------------------------------------
@torch.no_grad()
def reestimate_bn(model: nn.Module, data, batch: int = 64, seed: int = 0) -> int:
    """Eval-consistent batchnorm re-estimation: the running statistics of every BatchNorm of ``model`` are
    recomputed on ``data`` (as :func:`train_binary` takes it) one layer at a time in execution order, each with
    every BatchNorm before it already in eval mode (cumulative average over one pass; the weights are not
    touched). Returns the number of BatchNorm layers re-estimated.

    Why: a learned threshold b_c can settle on a value that a large share of its input takes exactly (on
    MNIST the background, constant after the float stem: sign(v_c - b_c) for over half of the positions).
    In training the batch statistics of the BN in front jitter v_c across b_c from batch to batch, the whole
    background of that channel flips with it, and the next BN's batch statistics absorb the shift; its running
    mean is the average over both states, which matches neither. In eval mode the state is fixed, the next BN
    does not absorb it and the model can collapse (examples/binary_resnet.py, official row, seed 0: 33.7 %
    in eval mode at 94.6 % training accuracy). Statistics taken with the layers before in eval mode match
    the eval-mode network."""
    from . import distributed as D

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    dev = next(model.parameters()).device
    order, hooks = [], []
    for m in bns:
        hooks.append(m.register_forward_pre_hook(lambda mod, args: order.append(mod) if mod not in order else None))
    was = model.training
    model.eval()
    dl = D.loader(data, batch, seed, 0, shuffle=False)
    try:
        for xb, _ in dl:
            model(D._to(xb, dev))
            break
    finally:
        for h in hooks:
            h.remove()
    order += [m for m in bns if m not in order]
    for bn in order:
        mom = bn.momentum
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.train()
        try:
            for xb, _ in dl:
                model(D._to(xb, dev))
        finally:
            bn.momentum = mom
            bn.eval()
        D.sync_buffers(model)
    model.train(was)
    return len(order)


class TauSchedule:
    """ReCU's exponential tau schedule (paper / official ``cpt_tau``):

        tau(t) = A * e^(t/T) + B,  A = (tau_end - tau_start) / (e - 1),  B = tau_start - A,

    for step t in [0, T] (clamped outside); tau(0) = tau_start, tau(T) = tau_end, strictly increasing when
    tau_end > tau_start."""

    def __init__(self, tau_start: float = 0.85, tau_end: float = 0.99, total_steps: int = 1):
        if not 0.5 <= tau_start <= 1.0 or not 0.5 <= tau_end <= 1.0:
            raise ValueError(f"tau must lie in [0.5, 1], got {tau_start}, {tau_end}")
        if total_steps < 1:
            raise ValueError("total_steps must be >= 1")
        self.tau_start, self.tau_end, self.total_steps = float(tau_start), float(tau_end), int(total_steps)
        self.A = (self.tau_end - self.tau_start) / (math.e - 1.0)
        self.B = self.tau_start - self.A

    def __call__(self, step: float) -> float:
        t = min(max(float(step), 0.0), float(self.total_steps))
        return self.A * math.exp(t / self.total_steps) + self.B


def distill_loss(out: torch.Tensor, y: torch.Tensor, t_out: torch.Tensor, weight: float = 1.0,
                 temperature: float = 1.0) -> torch.Tensor:
    """Knowledge distillation from a float teacher's logits ``t_out``:

        L = (1 - weight) * CE(out, y) + weight * T^2 * KL(softmax(t_out / T) || softmax(out / T))

    weight = 1, T = 1 is ReActNet's distributional loss (Liu et al., ECCV 2020: the student matches the
    teacher's output distribution, no labels); weight = 0 is plain cross entropy."""
    T = float(temperature)
    kl = F.kl_div(F.log_softmax(out / T, dim=1), F.log_softmax(t_out.detach() / T, dim=1), log_target=True,
                  reduction="batchmean") * (T * T)
    if weight >= 1.0:
        return kl
    return (1.0 - weight) * F.cross_entropy(out, y) + weight * kl


def train_binary(model: nn.Module, x, y=None, epochs: int = 4, batch: int = 64, lr: float = 3e-3,
                 method: str | None = None, seed: int = 0, progress: bool = True, tau_start: float = 0.85,
                 tau_end: float = 0.99, sched: str = "cosine", weight_decay: float = 0.0,
                 checkpoint: str | None = None, checkpoint_every: int | None = None,
                 on_step=None, teacher: nn.Module | None = None, distill_weight: float = 1.0,
                 distill_temperature: float = 1.0, two_step: float = 0.0,
                 bn_reestimate: bool = False) -> nn.Module:
    """Train ``model`` (binary or float) with Adam and a per-step LR schedule; return it in eval mode.

    ``x``, ``y``: numpy arrays or tensors (inputs, int64 labels); or ``x`` a Dataset / DataLoader of (input,
    label) and ``y`` None. ``method``: "recu" schedules tau on every ReCU layer per optimizer step, t = 0 .. T-1
    mapped onto [0, T] so that the last step trains at tau_end (which the model keeps afterwards); "ste" and
    "float" schedule nothing; None picks "recu" when the model has ReCU layers. ``sched``: "cosine" (cosine
    annealing to 0 over all steps) or "onecycle" (torch's OneCycleLR, as examples/mnist_common.train). Loss:
    cross entropy, or with a ``teacher`` (the float model, kept in eval mode) :func:`distill_loss` with
    ``distill_weight`` and ``distill_temperature``. Progress per epoch on stderr. The same seed gives the same
    batch order whatever the model, so models compare on one budget.

    Learned thresholds (RSign) not yet initialised are initialised first (:func:`init_thresholds`) from the
    first 256 training inputs (the same on every rank).

    ``two_step`` (a fraction in [0, 1)): the two-step schedule (Martinez et al., ICLR 2020; ReActNet):
    the first round(two_step * epochs) epochs train binary activations with real weights, the remaining
    epochs train the fully binary model (tau scheduled over those), each with its own optimizer and LR
    schedule; 0 trains the binary model throughout.

    Runs through :func:`edgepack.compress.distributed.train_loop`: one process by default; under ``torchrun``
    data-parallel (DDP, DistributedSampler; ``batch`` is per rank, global batch = batch x world size). tau
    comes from the global step, the same on every rank. ``checkpoint``: a path rank 0 writes every
    ``checkpoint_every`` steps (default every epoch) and that a restarted run resumes from (same seed and world
    size: the same final weights as an uninterrupted run; the first step of a two-step run uses
    ``checkpoint + ".step1"``). ``on_step(step, steps, module)``: called before every optimizer step, after tau
    is set.

    ``bn_reestimate`` (off by default; for a model with binary layers): after training, the batchnorm running
    statistics are re-estimated on the training data with :func:`reestimate_bn` (eval-consistent, one layer at
    a time), so that the eval-mode model sees the statistics of its own eval-mode inputs. Measured on
    examples/binary_resnet.py: it rescues the from-scratch run that collapsed in eval mode (33.7 -> 93.3 %) and
    lifts sign + STE (width 32: 94.8 / 94.7 / 96.5 -> 97.0 / 97.0 / 96.3), but the int8 build of the best
    width-32 ReCU model then lost 4.1 points to PyTorch (97.7 -> 93.6 % on the emulator) where the model
    trained without it loses 0.9 (97.5 -> 96.6): thresholds that sit on a constant input value flip under the
    int8 quantization of the layers before, and re-estimated statistics are tuned to one side of that flip. So
    it stays off until the thresholds are kept off such values.
    """
    from . import distributed as D

    has_recu = any(isinstance(m, _BINARY) and m.clamp for m in model.modules())
    if method is None:
        method = "recu" if has_recu else "float"
    if method not in ("recu", "ste", "float"):
        raise ValueError(f"method must be 'recu', 'ste', 'float' or None, got {method!r}")
    if sched not in ("cosine", "onecycle"):
        raise ValueError(f"sched must be 'cosine' or 'onecycle', got {sched!r}")
    if not 0.0 <= float(two_step) < 1.0:
        raise ValueError(f"two_step must be a fraction in [0, 1), got {two_step}")
    data = x if y is None else (x, y)
    init_thresholds(model, _first_inputs(data))
    layers = [m for m in model.modules() if isinstance(m, _BINARY)]
    e1 = int(round(float(two_step) * epochs)) if layers else 0
    e1 = min(e1, epochs - 1) if epochs > 1 else 0
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

        def loss_fn(out, yb, t_out):
            return distill_loss(out, yb, t_out, distill_weight, distill_temperature)
    else:
        loss_fn = F.cross_entropy

    def phase(n_epochs, binary_weights, tag, ckpt):
        for m in [m for m in model.modules() if isinstance(m, _BINARY)]:
            m.binary_weights = binary_weights
        state = {}
        tau_on = method == "recu" and binary_weights

        def step_hook(step, steps, module):
            if tau_on:
                if "taus" not in state:
                    state["taus"] = TauSchedule(tau_start, tau_end, steps)
                state["tau"] = state["taus"](step * steps / max(steps - 1, 1))
                set_tau(module, state["tau"])
            if on_step is not None:
                on_step(step, steps, module)

        def report(rec):
            tail = f", tau {state['tau']:.4f}" if "tau" in state else ""
            return (f"[{tag}] epoch {rec['epoch']}/{n_epochs}: loss {rec['loss']:.4f}, "
                    f"train acc {rec['acc']:.4f}{tail}")

        out, _ = D.train_loop(model, data, loss_fn, epochs=n_epochs, batch=batch, lr=lr, seed=seed,
                              scheduler=sched, on_step=step_hook, weight_decay=weight_decay,
                              checkpoint_path=ckpt, checkpoint_every=checkpoint_every,
                              progress=progress, tag=tag, report=report, teacher=teacher)
        return out

    if e1 > 0:
        model = phase(e1, False, f"{method} step 1: real weights", None if checkpoint is None
                      else f"{checkpoint}.step1")
    model = phase(epochs - e1, True, method if e1 == 0 else f"{method} step 2", checkpoint)
    if method == "recu":
        set_tau(model, tau_end)
    if bn_reestimate and layers:
        reestimate_bn(model, data, batch, seed)
    return model.eval()


# ---- deployment ------------------------------------------------------------------------------------------
class _DeployInput:
    """sign(x - b) of a deployed binary layer as ``torch.sign(x + shift)``, shift = -b a constant buffer (an
    add of a per-channel constant right before the sign, which edgepack folds into the layer's integer
    thresholds), or ``torch.sign(x)`` without a threshold."""

    def _init_shift(self, threshold, rank):
        if threshold is None:
            self.register_buffer("shift", None)
        else:
            self.register_buffer("shift", (-threshold.detach().clone()).reshape((1, -1) + (1,) * (rank - 2)))

    def _sign(self, x):
        return torch.sign(x if self.shift is None else x + self.shift)

    @property
    def threshold(self):
        return None if self.shift is None else -self.shift.reshape(-1)


class DeployBinaryConv2d(_DeployInput, nn.Module):
    """Exported form of a binary conv: F.conv2d(torch.sign(x + shift), W, b) with W's entries in {+a_c, -a_c}
    and shift = -b (the learned threshold; no add without one).

    Note: torch.sign(0) = 0 while training used sign(0) = +1; edgepack's importer reads this Sign as
    sign(0) = +1, so the built model matches the trained one exactly; run in PyTorch the two differ only
    where an input is exactly 0 (exactly at its threshold)."""

    def __init__(self, weight, bias, stride, padding, dilation, groups, method="", tau=None, threshold=None):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._init_shift(threshold, 4)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.method, self.tau = method, tau

    def forward(self, x):
        return F.conv2d(self._sign(x), self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        return (f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, method={self.method}, "
                f"threshold={'learned' if self.shift is not None else 'none'}")


class DeployBinaryLinear(_DeployInput, nn.Module):
    """Exported form of a binary linear layer: F.linear(torch.sign(x + shift), W, b), W's entries in
    {+a_c, -a_c} (same threshold and sign(0) notes as DeployBinaryConv2d)."""

    def __init__(self, weight, bias, method="", tau=None, threshold=None):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._init_shift(threshold, 2)
        self.method, self.tau = method, tau

    def forward(self, x):
        return F.linear(self._sign(x), self.weight, self.bias)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, method={self.method}"


@torch.no_grad()
def _materialise(m) -> torch.Tensor:
    """W = alpha_c * where(w' >= 0, +1, -1): entries exactly +alpha_c or -alpha_c (|alpha_c| >= 1e-8; a
    learned alpha_c is folded in as it is, negative included), the weight the training forward uses."""
    w = m.latent_weight()
    a = m.alpha(w)
    return (a.reshape((-1,) + (1,) * (w.dim() - 1)) * _pm1(w)).contiguous()


def export_ready(model: nn.Module) -> nn.Module:
    """A deploy copy (eval mode) for torch.export / ONNX: every BinaryConv2d / BinaryLinear becomes
    DeployBinaryConv2d / DeployBinaryLinear computing ``F.conv2d(torch.sign(x + shift), W_const, bias_const,
    ...)`` (or ``F.linear``), W_const a buffer whose entries are exactly +alpha_c or -alpha_c per output
    channel (the trained binary weight at the layer's current tau, zeros of w' mapped to +alpha_c; a learned
    alpha is folded into W, so the row holds +-|alpha_c|) and shift = -b the learned threshold (left out
    without one). The exported graph of such a layer is: [add] -> sign -> conv (or linear) with two-valued
    weights -> bias. ``model`` itself is left unchanged."""
    dep = copy.deepcopy(model).eval()
    for name, m in list(dep.named_modules()):
        if isinstance(m, RPReLU):
            _set_submodule(dep, name, DeployRPReLU(m))
            continue
        if not isinstance(m, _BINARY):
            continue
        if not m.binary_weights:
            raise ValueError(f"export_ready: layer '{name}' still has real weights (first step of the two-step "
                             "schedule); train its second step first")
        W = _materialise(m)
        tau = float(m.tau) if m.clamp else None
        b = m.act_bias if m.act_bias is not None else None
        if isinstance(m, BinaryConv2d):
            new = DeployBinaryConv2d(W, m.bias, m.stride, m.padding, m.dilation, m.groups, m.method, tau, b)
        else:
            new = DeployBinaryLinear(W, m.bias, m.method, tau, b)
        if name:
            _set_submodule(dep, name, new)
        else:
            dep = new
    return dep.eval()


def binary_layers(model: nn.Module) -> list:
    """The binary layers of a training model (BinaryConv2d / BinaryLinear) or of its export_ready() copy,
    in module order: a list of dicts {name, kind ("conv2d" | "linear"), method, tau (None without the clamp),
    alpha (float32 numpy array, one scale per output channel: |alpha_c|, the magnitude of W's row c),
    threshold (float32 numpy array b, one per input channel, or None)}."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, _BINARY):
            with torch.no_grad():
                a = m.alpha().abs()
            kind = "conv2d" if isinstance(m, BinaryConv2d) else "linear"
            tau = float(m.tau) if m.clamp else None
            thr = m.act_bias
        elif isinstance(m, (DeployBinaryConv2d, DeployBinaryLinear)):
            a = m.weight.abs().reshape(m.weight.shape[0], -1)[:, 0]  # |W| is alpha_c throughout row c
            kind = "conv2d" if isinstance(m, DeployBinaryConv2d) else "linear"
            tau = m.tau
            thr = m.threshold
        else:
            continue
        out.append({"name": name, "kind": kind, "method": m.method, "tau": tau,
                    "alpha": a.detach().cpu().numpy().astype(np.float32),
                    "threshold": None if thr is None else thr.detach().cpu().numpy().astype(np.float32)})
    return out
