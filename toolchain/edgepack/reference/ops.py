"""The integer kernels' arithmetic, one function per op of the integer dialect: the specification.

Every function takes a batch (N, H, W, C) or (N, F) of int8 values and returns int8 values; intermediate
sums are exact integers (int64 here; the C kernels use int32, which is exact for the layer sizes the packer
accepts). C kernels are tested against these functions, never the other way round.

Multiply-accumulate sums are computed through float64 matrix products: every partial sum is an integer
below 2^53 in magnitude (|x - zp| <= 255, |w| <= 127, K < 2^37), so float64 is exact and fast (BLAS).
"""

from __future__ import annotations

import numpy as np

from .arith import requantize, round_div_away


def _exact_matmul(a, b):
    r = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    return np.rint(r).astype(np.int64)


def _finish(acc, mult, shift, out_zp, act_min, act_max):
    y = requantize(acc, mult, shift) + out_zp
    return np.clip(y, act_min, act_max).astype(np.int8)


def _patches(x, kh, kw, strides, pads, dilations, fill):
    """(N,H,W,C) -> (N,OH,OW,KH,KW,C) windows and a validity mask (OH,OW,KH,KW)."""
    n, h, w, c = x.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xp = np.full((n, h + pt + pb, w + pl + pr, c), fill, dtype=np.int64)
    xp[:, pt:pt + h, pl:pl + w, :] = x
    valid = np.zeros((h + pt + pb, w + pl + pr), bool)
    valid[pt:pt + h, pl:pl + w] = True
    iy = (np.arange(oh) * sh)[:, None] + np.arange(kh)[None, :] * dh  # (OH, KH)
    ix = (np.arange(ow) * sw)[:, None] + np.arange(kw)[None, :] * dw  # (OW, KW)
    pat = xp[:, iy[:, None, :, None], ix[None, :, None, :], :]  # (N,OH,OW,KH,KW,C)
    mask = valid[iy[:, None, :, None], ix[None, :, None, :]]  # (OH,OW,KH,KW)
    return pat, mask


def conv2d_s8(x, w, bias, mult, shift, *, strides, pads, dilations, in_zp, out_zp, act_min, act_max, **_):
    """acc[o] = bias[o] + sum over the window of (x - in_zp) * w[o, kh, kw, i]; padded taps add 0."""
    o, kh, kw, ci = w.shape
    pat, _ = _patches(np.asarray(x, np.int64) - in_zp, kh, kw, strides, pads, dilations, 0)
    n, oh, ow = pat.shape[:3]
    acc = _exact_matmul(pat.reshape(n * oh * ow, -1), w.reshape(o, -1).T) + bias
    return _finish(acc, mult, shift, out_zp, act_min, act_max).reshape(n, oh, ow, o)


def dwconv2d_s8(x, w, bias, mult, shift, *, strides, pads, dilations, in_zp, out_zp, act_min, act_max,
                depth_multiplier=1, **_):
    """Output channel c reads input channel c // depth_multiplier; w is (KH, KW, C_out)."""
    kh, kw, co = w.shape
    xr = np.repeat(np.asarray(x, np.int64) - in_zp, depth_multiplier, axis=3)
    pat, _ = _patches(xr, kh, kw, strides, pads, dilations, 0)
    acc = np.einsum("nyxhwc,hwc->nyxc", pat, w.astype(np.int64)) + bias
    return _finish(acc, mult, shift, out_zp, act_min, act_max)


def dense_s8(x, w, bias, mult, shift, *, in_zp, out_zp, act_min, act_max, **_):
    n = x.shape[0]
    acc = _exact_matmul(np.asarray(x, np.int64).reshape(n, -1) - in_zp, w.T) + bias
    return _finish(acc, mult, shift, out_zp, act_min, act_max)


def maxpool_s8(x, *, kernel, strides, pads, **_):
    """Max over the in-bounds taps of each window (padding never wins)."""
    pat, _ = _patches(np.asarray(x, np.int64), kernel[0], kernel[1], strides, pads, (1, 1), -129)
    return pat.max(axis=(3, 4)).astype(np.int8)


def avgpool_s8(x, *, kernel, strides, pads, count_include_pad, zp, **_):
    """round_half_away(S / d), TensorFlow Lite's AveragePool (and CMSIS-NN's, TFLM's): S is the sum of the raw
    int8 values over the in-bounds taps (input and output share scale and zero point), plus zp for each
    padded tap when count_include_pad (a padded real 0 is zp); d = KH*KW then (or without padding), else
    the in-bounds count. Rounding the raw sum is not rounding the zero-point-relative one: on an exact tie
    they differ by 1."""
    pat, mask = _patches(np.asarray(x, np.int64), kernel[0], kernel[1], strides, pads, (1, 1), zp)
    if count_include_pad:
        s = pat.sum(axis=(3, 4))  # padded taps hold zp
        d = np.full(mask.shape[:2], kernel[0] * kernel[1])
    else:
        s = (pat * mask[None, :, :, :, :, None]).sum(axis=(3, 4))
        d = np.maximum(mask.sum(axis=(2, 3)), 1)
    y = round_div_away(s, d[None, :, :, None])
    return np.clip(y, -128, 127).astype(np.int8)


def add_s8(a, b, *, a_zp, b_zp, left_shift, a_mult, a_shift, b_mult, b_shift, out_mult, out_shift, out_zp,
           act_min, act_max, **_):
    """TFLite ADD: both inputs to a common scale with a left shift, summed, requantized to the output."""
    va = requantize((np.asarray(a, np.int64) - a_zp) << left_shift, a_mult, a_shift)
    vb = requantize((np.asarray(b, np.int64) - b_zp) << left_shift, b_mult, b_shift)
    return _finish(va + vb, out_mult, out_shift, out_zp, act_min, act_max)


def clamp_s8(x, *, lo, hi, **_):
    return np.clip(x, lo, hi).astype(np.int8)


def softmax_s8(x, lut, **_):
    """e = lut[max(x) - x]; y = clamp((e * 256 + sum(e) / 2) / sum(e) - 128); output scale 1/256, zp -128."""
    x = np.asarray(x, np.int64)
    d = x.max(axis=-1, keepdims=True) - x
    e = lut.astype(np.int64)[d]
    s = e.sum(axis=-1, keepdims=True)
    y = (e * 256 + s // 2) // s - 128
    return np.clip(y, -128, 127).astype(np.int8)


def reshape(x, *, shape, **_):
    return np.asarray(x).reshape((x.shape[0],) + tuple(shape[1:]))


OPS = {f.__name__: f for f in (conv2d_s8, dwconv2d_s8, dense_s8, maxpool_s8, avgpool_s8, add_s8, clamp_s8,
                               softmax_s8, reshape)}

from .ops_binary import OPS as _BINARY_OPS  # noqa: E402

OPS.update(_BINARY_OPS)

from .ops_exp import OPS as _EXP_OPS  # noqa: E402

OPS.update(_EXP_OPS)

from .ops_sparse import OPS as _SPARSE_OPS, SPARSE_OPS  # noqa: E402, F401

OPS.update(_SPARSE_OPS)
