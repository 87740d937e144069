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
   ``quantile="empirical"`` (default) uses the exact sample quantiles (linear interpolation, as
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
   - ``act_grad="clipped"`` (default): d x_b/d a0 = 1{|a0| <= 1} (BNN's clipped STE, hardtanh's gradient);
   - ``act_grad="approxsign"`` (Bi-Real's ApproxSign, what the official code uses):
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
act_norm=True`` with the exponential tau schedule 0.85 -> 0.99. The defaults (empirical quantiles, closed
alpha, clipped STE, no act_norm) are kept for compatibility; all of these are options of method="recu" only.
examples/mnist_binary.py compares the variants with the STE baseline over several seeds (its docstring has the
numbers: on that small task none of them beats STE beyond noise).

method="ste" (the BNN / XNOR-Net baseline): w_b = alpha_c * sign(w), alpha_c = mean_i |w_{c,i}|, identity STE
for the weight sign, the same clipped STE for activations; no standardization, no clamp, no tau.

Deployment: ``export_ready(model)`` materialises each binary layer as ``F.conv2d(torch.sign(x), W, b)`` (or
``F.linear``) with W a constant whose entries are exactly +alpha_c or -alpha_c, which is the pattern the
edgepack importer recognises as a binary layer.
"""

from __future__ import annotations

import copy
import math
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BinaryConv2d", "BinaryLinear", "TauSchedule", "act_std_norm", "binarize", "binary_layers",
           "export_ready", "quantile_clamp", "set_tau", "sign_approx", "sign_ste", "standardize_weight",
           "train_binary"]

METHODS = ("recu", "ste")
ACT_GRADS = ("clipped", "approxsign")
SCALES = ("closed", "learned")
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
def _check_options(method: str, quantile: str, act_grad: str, scale: str, act_norm: bool) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if quantile not in ("empirical", "laplace"):
        raise ValueError(f"quantile must be 'empirical' or 'laplace', got {quantile!r}")
    if act_grad not in ACT_GRADS:
        raise ValueError(f"act_grad must be one of {ACT_GRADS}, got {act_grad!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if method == "ste" and (act_grad != "clipped" or scale != "closed" or act_norm):
        raise ValueError("act_grad, scale and act_norm are options of method='recu'; method='ste' is the plain "
                         "BNN / XNOR-Net baseline (clipped STE, closed-form alpha, no act_norm)")


class _BinaryMixin:
    """Shared weight path of BinaryConv2d / BinaryLinear. Attributes: method, quantile, act_grad, scale,
    act_norm, buffer tau, and with scale='learned' the parameter learned_alpha (shape (out,))."""

    def _init_binary(self, method: str, tau: float, quantile: str, act_grad: str = "clipped",
                     scale: str = "closed", act_norm: bool = False):
        _check_options(method, quantile, act_grad, scale, act_norm)
        self.method = method
        self.quantile = quantile
        self.act_grad = act_grad
        self.scale = scale
        self.act_norm = bool(act_norm)
        self.register_buffer("tau", torch.tensor(float(tau)))
        if scale == "learned":
            w = self.weight
            self.learned_alpha = nn.Parameter(torch.rand(w.shape[0], device=w.device, dtype=w.dtype))
        else:
            self.learned_alpha = None

    def binary_input(self, x: torch.Tensor) -> torch.Tensor:
        """sign(x) (sign(0) = +1) with the layer's activation gradient estimator (and, in training mode with
        act_norm, the official per-sample std normalisation in front of it)."""
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
        """Set ReCU's tau (ignored by method='ste')."""
        if not 0.5 <= float(tau) <= 1.0:
            raise ValueError(f"ReCU tau must lie in [0.5, 1], got {tau}")
        self.tau.fill_(float(tau))

    def latent_weight(self) -> torch.Tensor:
        """w' : the weight whose sign is taken (ReCU: standardized, then clamped to the quantiles)."""
        if self.method == "ste":
            return self.weight
        return quantile_clamp(standardize_weight(self.weight), float(self.tau), self.quantile)

    def alpha(self, w_latent: torch.Tensor | None = None) -> torch.Tensor:
        """Per-output-channel scale, shape (out,): alpha_c = mean_i |w'_{c,i}| (scale='closed', > 0), or the
        learned parameter with |alpha_c| kept >= 1e-8 (scale='learned'; may be negative)."""
        if self.scale == "learned":
            a = self.learned_alpha
            return torch.where(a.abs() >= _ALPHA_MIN, a, _pm1(a) * _ALPHA_MIN)
        w = self.latent_weight() if w_latent is None else w_latent
        return w.abs().reshape(w.shape[0], -1).mean(dim=1).clamp_min(_ALPHA_MIN)

    def binary_weight(self) -> torch.Tensor:
        """alpha_c * sign(w') (sign(0) = +1), differentiable through the STE and alpha."""
        w = self.latent_weight()
        a = self.alpha(w).reshape((-1,) + (1,) * (w.dim() - 1))
        return a * sign_weight_ste(w)

    def extra_repr(self):
        tail = (f", tau={float(self.tau):.4f}, quantile={self.quantile}, act_grad={self.act_grad}, "
                f"scale={self.scale}, act_norm={self.act_norm}") if self.method == "recu" else ""
        return super().extra_repr() + f", method={self.method}{tail}"


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """Conv2d with 1-bit input and weights: conv(sign(x), alpha_c * sign(w')) + bias (gradient estimators and
    alpha per the options, see the module docstring).

    Zero padding pads the binarized input with 0 (not +-1), as F.conv2d does; edgepack's binary kernels
    handle such padding exactly."""

    def __init__(self, *args, method: str = "recu", tau: float = 0.85, quantile: str = "empirical",
                 act_grad: str = "clipped", scale: str = "closed", act_norm: bool = False, **kw):
        super().__init__(*args, **kw)
        if self.padding_mode != "zeros":
            raise ValueError("BinaryConv2d supports padding_mode='zeros' only")
        self._init_binary(method, tau, quantile, act_grad, scale, act_norm)

    def forward(self, x):
        return self._conv_forward(self.binary_input(x), self.binary_weight(), self.bias)

    @classmethod
    def from_float(cls, m: nn.Conv2d, **opts):
        """A binary copy of ``m`` (its weights and bias, train / eval mode); ``opts`` as the constructor's
        (method, tau, quantile, act_grad, scale, act_norm)."""
        return cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                   dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
                   device=m.weight.device, dtype=m.weight.dtype, **opts)._copy_float(m)


class BinaryLinear(_BinaryMixin, nn.Linear):
    """Linear with 1-bit input and weights: linear(sign(x), alpha_c * sign(w')) + bias (options as
    BinaryConv2d)."""

    def __init__(self, *args, method: str = "recu", tau: float = 0.85, quantile: str = "empirical",
                 act_grad: str = "clipped", scale: str = "closed", act_norm: bool = False, **kw):
        super().__init__(*args, **kw)
        self._init_binary(method, tau, quantile, act_grad, scale, act_norm)

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
        if isinstance(m, _BINARY) and m.method == "recu":
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


def binarize(model: nn.Module, first_last_int8: bool = True, method: str = "recu",
             skip: Iterable[str] | None = None, example_input=None, tau: float = 0.85,
             quantile: str = "empirical", act_grad: str = "clipped", scale: str = "closed",
             act_norm: bool = False):
    """Replace the model's nn.Conv2d / nn.Linear modules by BinaryConv2d / BinaryLinear in place.

    Weights and biases are copied. With ``first_last_int8`` (default) the first and the last layer stay full
    precision (int8 after edgepack's quantization), as is usual for BNNs. First and last are taken in
    *execution order* when ``example_input`` (a tensor or a tuple of forward arguments) is given: one eval
    forward pass with hooks records which layer runs first and last (layers the pass never calls are left
    alone). Without ``example_input`` they are taken in *module registration order* (``named_modules()``),
    which equals execution order for nn.Sequential-style models defined in forward order.
    Also left alone: names in ``skip``, grouped (depthwise) convolutions (no binary grouped kernel), and
    convolutions with a padding_mode other than 'zeros'.

    ``tau``, ``quantile``, ``act_grad``, ``scale``, ``act_norm``: the layers' options (module docstring; all
    but tau's value are ReCU options, and method='ste' accepts only their defaults).

    Returns ``(model, names)`` with the names of the binarized modules, in the order used.
    """
    _check_options(method, quantile, act_grad, scale, act_norm)
    opts = dict(method=method, tau=tau, quantile=quantile, act_grad=act_grad, scale=scale, act_norm=act_norm)
    skip = set(skip or ())
    cands = [n for n, m in model.named_modules()
             if type(m) in (nn.Conv2d, nn.Linear) and n]
    if example_input is not None:
        cands = _execution_order(model, example_input, cands)
    if first_last_int8:
        cands = cands[1:-1]
    done = []
    for name in cands:
        m = model.get_submodule(name)
        if name in skip:
            continue
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.padding_mode != "zeros":
                continue
            new = BinaryConv2d.from_float(m, **opts)
        else:
            new = BinaryLinear.from_float(m, **opts)
        _set_submodule(model, name, new)
        done.append(name)
    return model, done


# ---- training -------------------------------------------------------------------------------------------
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


def train_binary(model: nn.Module, x, y=None, epochs: int = 4, batch: int = 64, lr: float = 3e-3,
                 method: str | None = None, seed: int = 0, progress: bool = True, tau_start: float = 0.85,
                 tau_end: float = 0.99, sched: str = "cosine", weight_decay: float = 0.0,
                 checkpoint: str | None = None, checkpoint_every: int | None = None,
                 on_step=None) -> nn.Module:
    """Train ``model`` (binary or float) with Adam and a per-step LR schedule; return it in eval mode.

    ``x``, ``y``: numpy arrays or tensors (inputs, int64 labels); or ``x`` a Dataset / DataLoader of (input,
    label) and ``y`` None. ``method``: "recu" schedules tau on every ReCU layer per optimizer step, t = 0 .. T-1
    mapped onto [0, T] so that the last step trains at tau_end (which the model keeps afterwards); "ste" and
    "float" schedule nothing; None picks "recu" when the model has ReCU layers. ``sched``: "cosine" (cosine
    annealing to 0 over all steps) or "onecycle" (torch's OneCycleLR, as examples/mnist_common.train). Loss:
    cross entropy. Progress per epoch on stderr. The same seed gives the same batch order whatever the model,
    so models compare on one budget.

    Runs through :func:`edgepack.compress.distributed.train_loop`: one process by default; under ``torchrun``
    data-parallel (DDP, DistributedSampler; ``batch`` is per rank, global batch = batch x world size). tau
    comes from the global step, the same on every rank. ``checkpoint``: a path rank 0 writes every
    ``checkpoint_every`` steps (default every epoch) and that a restarted run resumes from (same seed and world
    size: the same final weights as an uninterrupted run). ``on_step(step, steps, module)``: called before
    every optimizer step, after tau is set.
    """
    from . import distributed as D

    has_recu = any(isinstance(m, _BINARY) and m.method == "recu" for m in model.modules())
    if method is None:
        method = "recu" if has_recu else "float"
    if method not in ("recu", "ste", "float"):
        raise ValueError(f"method must be 'recu', 'ste', 'float' or None, got {method!r}")
    if sched not in ("cosine", "onecycle"):
        raise ValueError(f"sched must be 'cosine' or 'onecycle', got {sched!r}")
    data = x if y is None else (x, y)
    state = {}

    def step_hook(step, steps, module):
        if method == "recu":
            if "taus" not in state:
                state["taus"] = TauSchedule(tau_start, tau_end, steps)
            state["tau"] = state["taus"](step * steps / max(steps - 1, 1))
            set_tau(module, state["tau"])
        if on_step is not None:
            on_step(step, steps, module)

    def report(rec):
        tail = f", tau {state['tau']:.4f}" if "tau" in state else ""
        return f"[{method}] epoch {rec['epoch']}/{epochs}: loss {rec['loss']:.4f}, train acc {rec['acc']:.4f}{tail}"

    model, _ = D.train_loop(model, data, F.cross_entropy, epochs=epochs, batch=batch, lr=lr, seed=seed,
                            scheduler=sched, on_step=step_hook, weight_decay=weight_decay,
                            checkpoint_path=checkpoint, checkpoint_every=checkpoint_every,
                            progress=progress, tag=method, report=report)
    if method == "recu":
        set_tau(model, tau_end)
    return model.eval()


# ---- deployment ------------------------------------------------------------------------------------------
class DeployBinaryConv2d(nn.Module):
    """Exported form of a binary conv: F.conv2d(torch.sign(x), W, b) with W's entries in {+a_c, -a_c}.

    Note: torch.sign(0) = 0 while training used sign(0) = +1; edgepack's importer reads this Sign as
    sign(0) = +1, so the built model matches the trained one exactly; run in PyTorch the two differ only
    where an input is exactly 0."""

    def __init__(self, weight, bias, stride, padding, dilation, groups, method="", tau=None):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.method, self.tau = method, tau

    def forward(self, x):
        return F.conv2d(torch.sign(x), self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, method={self.method}"


class DeployBinaryLinear(nn.Module):
    """Exported form of a binary linear layer: F.linear(torch.sign(x), W, b), W's entries in {+a_c, -a_c}
    (same sign(0) note as DeployBinaryConv2d)."""

    def __init__(self, weight, bias, method="", tau=None):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.method, self.tau = method, tau

    def forward(self, x):
        return F.linear(torch.sign(x), self.weight, self.bias)

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
    DeployBinaryConv2d / DeployBinaryLinear computing ``F.conv2d(torch.sign(x), W_const, bias_const, ...)``
    (or ``F.linear``), W_const a buffer whose entries are exactly +alpha_c or -alpha_c per output channel
    (the trained binary weight at the layer's current tau, zeros of w' mapped to +alpha_c; a learned alpha
    is folded into W, so the row holds +-|alpha_c|). The exported
    graph of such a layer is: sign -> conv (or linear) with two-valued weights -> bias. ``model`` itself is
    left unchanged."""
    dep = copy.deepcopy(model).eval()
    for name, m in list(dep.named_modules()):
        if not isinstance(m, _BINARY):
            continue
        W = _materialise(m)
        tau = float(m.tau) if m.method == "recu" else None
        if isinstance(m, BinaryConv2d):
            new = DeployBinaryConv2d(W, m.bias, m.stride, m.padding, m.dilation, m.groups, m.method, tau)
        else:
            new = DeployBinaryLinear(W, m.bias, m.method, tau)
        if name:
            _set_submodule(dep, name, new)
        else:
            dep = new
    return dep.eval()


def binary_layers(model: nn.Module) -> list:
    """The binary layers of a training model (BinaryConv2d / BinaryLinear) or of its export_ready() copy,
    in module order: a list of dicts {name, kind ("conv2d" | "linear"), method, tau (None for ste),
    alpha (float32 numpy array, one scale per output channel: |alpha_c|, the magnitude of W's row c)}."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, _BINARY):
            with torch.no_grad():
                a = m.alpha().abs()
            kind = "conv2d" if isinstance(m, BinaryConv2d) else "linear"
            tau = float(m.tau) if m.method == "recu" else None
        elif isinstance(m, (DeployBinaryConv2d, DeployBinaryLinear)):
            a = m.weight.abs().reshape(m.weight.shape[0], -1)[:, 0]  # |W| is alpha_c throughout row c
            kind = "conv2d" if isinstance(m, DeployBinaryConv2d) else "linear"
            tau = m.tau
        else:
            continue
        out.append({"name": name, "kind": kind, "method": m.method, "tau": tau,
                    "alpha": a.detach().cpu().numpy().astype(np.float32)})
    return out
