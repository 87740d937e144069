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


def conv2d_s8(x, w, bias, mult, shift, *, strides, pads, dilations, in_zp, out_zp, act_min, act_max, groups=1,
              **_):
    """acc[o] = bias[o] + sum over the window of (x - in_zp) * w[o, kh, kw, i]; padded taps add 0.

    Grouped (``groups`` g > 1): w is (O, KH, KW, C/g) and output channel o reads the input channels
    [k C/g, (k + 1) C/g) of its group k = o // (O/g)."""
    o, kh, kw, ci = w.shape
    pat, _ = _patches(np.asarray(x, np.int64) - in_zp, kh, kw, strides, pads, dilations, 0)
    n, oh, ow = pat.shape[:3]
    og = o // groups
    acc = np.concatenate([_exact_matmul(pat[..., k * ci:(k + 1) * ci].reshape(n * oh * ow, -1),
                                        w[k * og:(k + 1) * og].reshape(og, -1).T) for k in range(groups)], axis=1)
    acc = acc + bias
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


def maxpool_s8(x, *, kernel, strides, pads, dilations=(1, 1), **_):
    """Max over the in-bounds taps of each window (padding never wins); taps ``dilations`` apart."""
    pat, _ = _patches(np.asarray(x, np.int64), kernel[0], kernel[1], strides, pads, dilations, -129)
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


def add_s8(*xs, zps, mults, shifts, signs, left_shift, out_mult, out_shift, out_zp, act_min, act_max, **_):
    """TFLite ADD / SUB, n-ary: every input to a common scale with a left shift, summed with its sign,
    requantized to the output. Inputs broadcast (NHWC, numpy rules; constants have batch 1):

        v_i = requantize((x_i - zp_i) << left_shift, mult_i, shift_i)
        y   = clamp(requantize(sum_i sign_i v_i, out_mult, out_shift) + out_zp, act_min, act_max)
    """
    acc = 0
    for x, zp, m, sh, sg in zip(xs, zps, mults, shifts, signs):
        acc = acc + int(sg) * requantize((np.asarray(x, np.int64) - zp) << left_shift, m, sh)
    return _finish(acc, out_mult, out_shift, out_zp, act_min, act_max)


def mul_s8(a, b, *, a_zp, b_zp, out_mult, out_shift, out_zp, act_min, act_max, **_):
    """TFLite MUL: y = clamp(requantize((a - a_zp) * (b - b_zp), out_mult, out_shift) + out_zp); broadcasting
    (per-channel scaling (N, 1, 1, C) x (N, H, W, C) of squeeze-excite)."""
    prod = (np.asarray(a, np.int64) - a_zp) * (np.asarray(b, np.int64) - b_zp)
    return _finish(prod, out_mult, out_shift, out_zp, act_min, act_max)


def lut_s8(x, table, **_):
    """y = table[x + 128]: an int8 -> int8 function tabulated at build time (quantize.py builds the table)."""
    return np.asarray(table, np.int8)[np.asarray(x, np.int64) + 128]


def prelu_s8(x, alpha, *, in_zp, alpha_zp, pos_mult, pos_shift, neg_mult, neg_shift, out_zp, **_):
    """TFLite PRELU with per-channel slopes (int8, last axis): v = x - in_zp;
    y = clamp(out_zp + (v >= 0 ? requantize(v, pos) : requantize(v * (alpha_c - alpha_zp), neg)), -128, 127)."""
    v = np.asarray(x, np.int64) - in_zp
    a = np.asarray(alpha, np.int64) - alpha_zp
    y = np.where(v >= 0, requantize(v, pos_mult, pos_shift), requantize(v * a, neg_mult, neg_shift)) + out_zp
    return np.clip(y, -128, 127).astype(np.int8)


def _rescale(x, zp, mult, shift, out_zp, identity):
    """TFLite's int8 requantization (the QUANTIZE op from int8 to int8): identity where the scales and zero
    points agree, else clamp(requantize(x - zp, mult, shift) + out_zp, -128, 127)."""
    if identity:
        return np.asarray(x, np.int8)
    return np.clip(requantize(np.asarray(x, np.int64) - zp, mult, shift) + out_zp, -128, 127).astype(np.int8)


def concat_s8(*xs, axis, zps, mults, shifts, identity, out_zp, **_):
    """Concatenation along NHWC ``axis`` (TFLite CONCATENATION; inputs whose scale or zero point differ from the
    output's are requantized to it as TFLite's int8 QUANTIZE does)."""
    return np.concatenate([_rescale(x, zp, m, sh, out_zp, same) for x, zp, m, sh, same in
                           zip(xs, zps, mults, shifts, identity)], axis=axis)


def slice_s8(x, *, axis, start, end, step=1, identity=True, in_zp=0, mult=0, shift=0, out_zp=0, **_):
    """x[start:end:step] along NHWC ``axis``; requantized (as concat_s8's inputs) where it feeds a concat in
    another scale."""
    idx = [slice(None)] * np.ndim(x)
    idx[axis] = slice(start, end, step)
    return _rescale(np.asarray(x)[tuple(idx)], in_zp, mult, shift, out_zp, identity)


def pad_s8(x, *, pads, channel_pads=(0, 0), value, **_):
    """Constant pad of an NHWC tensor, (top, left, bottom, right) and (front, back) channels, with the int8
    ``value`` (the float pad value quantized in the input's scale, which the output keeps)."""
    t, l, b, r = pads
    cf, cb = channel_pads
    return np.pad(np.asarray(x, np.int8), ((0, 0), (t, b), (l, r), (cf, cb)), constant_values=int(value))


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


OPS = {f.__name__: f for f in (conv2d_s8, dwconv2d_s8, dense_s8, maxpool_s8, avgpool_s8, add_s8, mul_s8, lut_s8,
                               prelu_s8, concat_s8, slice_s8, pad_s8, clamp_s8, softmax_s8, reshape)}

from .ops_binary import OPS as _BINARY_OPS  # noqa: E402

OPS.update(_BINARY_OPS)

from .ops_exp import OPS as _EXP_OPS  # noqa: E402

OPS.update(_EXP_OPS)

from .ops_sparse import OPS as _SPARSE_OPS, SPARSE_OPS  # noqa: E402, F401

OPS.update(_SPARSE_OPS)

from .ops_spatial import OPS as _SPATIAL_OPS  # noqa: E402

OPS.update(_SPATIAL_OPS)

from .ops_rnn import OPS as _RNN_OPS  # noqa: E402

OPS.update(_RNN_OPS)
