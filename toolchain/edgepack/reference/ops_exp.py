"""Arithmetic of the exponent-coded weight layers (``--weights expN``): the specification.

A layer's packed codes (``pack.expcodes``) decode to integer weights sign * 2^(top - (m-1)); from there the
arithmetic is exactly the int8 layer's (``reference.ops``): int32 accumulation of (x - in_zp) * w over the
window (padding taps add 0), plus the int32 bias, TFLite requantization, clamp. A kernel may multiply by the
decoded weight or shift-and-add; the integers are the same.
"""

from __future__ import annotations

import numpy as np

from ..pack.expcodes import decode, unpack
from .ops import conv2d_s8, dense_s8, dwconv2d_s8


def exp_weights(codes, *, bits, top, wshape, **_):
    return decode(unpack(codes, bits, wshape), bits, top)


def conv2d_exp(x, codes, bias, mult, shift, *, bits, top, wshape, **attrs):
    """wshape (O, KH, KW, I)."""
    return conv2d_s8(x, exp_weights(codes, bits=bits, top=top, wshape=wshape), bias, mult, shift, **attrs)


def dwconv2d_exp(x, codes, bias, mult, shift, *, bits, top, wshape, **attrs):
    """wshape (C_out, KH, KW): codes are stored channel-major; the int8 op takes (KH, KW, C_out)."""
    w = exp_weights(codes, bits=bits, top=top, wshape=wshape).transpose(1, 2, 0)
    return dwconv2d_s8(x, w, bias, mult, shift, **attrs)


def dense_exp(x, codes, bias, mult, shift, *, bits, top, wshape, **attrs):
    """wshape (O, I)."""
    return dense_s8(x, exp_weights(codes, bits=bits, top=top, wshape=wshape), bias, mult, shift, **attrs)


OPS = {f.__name__: f for f in (conv2d_exp, dwconv2d_exp, dense_exp)}
