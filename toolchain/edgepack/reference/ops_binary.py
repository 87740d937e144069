"""Arithmetic of the binary (1-bit) integer ops: the specification the XNOR-popcount kernels must equal.

Packed activations are NHWC with the channel axis packed 32 per uint32 word (``pack.bitplanes``): channel c
is bit c % 32 of word c // 32; bit 1 means -1, bit 0 means +1; the pad bits of the last word are 0.
Packed weights are (O, KH, KW, Cw) words in the same layout. For one tap (a pixel of the window), the dot
product of C channels of +-1 values is C - 2 * popcount(x XOR w) (pad bits are 0 in both, so they agree
and cancel against C counted without them). Taps that fall in the zero padding contribute 0: the padding of
a binary conv is exact (PyTorch pads the sign()ed input with zeros), not a pretend +1.
"""

from __future__ import annotations

import numpy as np

from .arith import requantize

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def popcount32(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.uint32)
    b = w.view(np.uint8).reshape(w.shape + (4,))
    return _POP8[b].sum(axis=-1)


def _bits(words: np.ndarray, channels: int) -> np.ndarray:
    """(..., Cw) uint32 -> (..., channels) of +1 / -1 (int64)."""
    words = np.asarray(words, dtype=np.uint32)
    shifts = np.arange(32, dtype=np.uint32)
    bits = ((words[..., :, None] >> shifts) & 1).reshape(words.shape[:-1] + (-1,))[..., :channels]
    return 1 - 2 * bits.astype(np.int64)


def _pack(neg: np.ndarray) -> np.ndarray:
    """(..., C) bool (True = -1) -> (..., ceil(C/32)) uint32, pad bits 0."""
    c = neg.shape[-1]
    cw = (c + 31) // 32
    padded = np.zeros(neg.shape[:-1] + (cw * 32,), dtype=np.uint64)
    padded[..., :c] = neg
    weights = (np.uint64(1) << np.arange(32, dtype=np.uint64))
    return (padded.reshape(neg.shape[:-1] + (cw, 32)) * weights).sum(axis=-1).astype(np.uint32)


def binarize_s8(x, thresh, **_):
    """int8 (N, ..., C) -> packed bits: channel c of a value is -1 (bit 1) when q < thresh[c] (int16, (C,)).

    sign(x - t_c) of real values x = s (q - zp): thresh[c] = zp + ceil(t_c / s), clipped to [-128, 128]
    (t_c = 0: thresh[c] = zp, the value is -1 when it is < 0)."""
    return _pack(np.asarray(x, np.int32) < np.asarray(thresh, np.int32))


def bdot(x, w, *, channels, strides, pads, dilations):
    """Integer dot products of a binary convolution: (N, OH, OW, O) int64, padding taps contribute 0."""
    n, h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xs = _bits(x, channels)  # (N,H,W,C) of +-1
    ws = _bits(w, channels)  # (O,KH,KW,C)
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, channels), dtype=np.int64)
    xp[:, pt:pt + h, pl:pl + wd] = xs
    iy = (np.arange(oh) * sh)[:, None] + np.arange(kh)[None, :] * dh
    ix = (np.arange(ow) * sw)[:, None] + np.arange(kw)[None, :] * dw
    pat = xp[:, iy[:, None, :, None], ix[None, :, None, :], :]  # (N,OH,OW,KH,KW,C)
    r = pat.reshape(n * oh * ow, -1).astype(np.float64) @ ws.reshape(o, -1).T.astype(np.float64)
    return np.rint(r).astype(np.int64).reshape(n, oh, ow, o)


def bconv2d_b1(x, w, thresh, *, channels, strides, pads, dilations, **_):
    """Binary conv with binary output: out bit o is 1 (-1) where dot[o] < thresh[o] (BN + sign folded)."""
    d = bdot(x, w, channels=channels, strides=strides, pads=pads, dilations=dilations)
    return _pack(d < np.asarray(thresh, np.int64))


def bconv2d_b1_s8(x, w, bias, mult, shift, *, channels, strides, pads, dilations, acc_shift, out_zp, act_min,
                  act_max, **_):
    """Binary conv with int8 output: acc = (dot << acc_shift) + bias, then TFLite requantization."""
    d = bdot(x, w, channels=channels, strides=strides, pads=pads, dilations=dilations)
    acc = (d << acc_shift) + np.asarray(bias, np.int64)
    y = requantize(acc, mult, shift) + out_zp
    return np.clip(y, act_min, act_max).astype(np.int8)


OPS = {f.__name__: f for f in (binarize_s8, bconv2d_b1, bconv2d_b1_s8)}
