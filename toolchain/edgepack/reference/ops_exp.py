"""Arithmetic of the exponent-coded weight layers: the specification.

``*_expcb`` (``--weights expN``, tuned base): a layer's packed codes (``pack.expcodes``) decode through its
integer codebook to the weights sign * codebook[g, m] (g the output channel, or 0 for a per-layer codebook).
``*_exp`` (``--weights pow2-N``, powers of two): the codes decode to sign * 2^(top - (m-1)).
From there the arithmetic is exactly the int8 layer's (``reference.ops``): int32 accumulation of
(x - in_zp) * w over the window (padding taps add 0), plus the int32 bias, TFLite requantization, clamp. A
kernel may multiply by the decoded weight or shift-and-add; the integers are the same. The packer proves
|bias| + 255 * sum |w| < 2^31 per channel, so no partial sum leaves int32.
"""

from __future__ import annotations

import numpy as np

from ..pack.expcodes import decode, decode_codebook, unpack
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


def codebook_weights(codes, codebook, *, bits, wshape, **_):
    return decode_codebook(unpack(codes, bits, wshape), bits, codebook)


def conv2d_expcb(x, codes, codebook, bias, mult, shift, *, bits, wshape, **attrs):
    """wshape (O, KH, KW, I); codebook (O or 1, 2^(bits-1)) int16."""
    return conv2d_s8(x, codebook_weights(codes, codebook, bits=bits, wshape=wshape), bias, mult, shift, **attrs)


def dwconv2d_expcb(x, codes, codebook, bias, mult, shift, *, bits, wshape, **attrs):
    """wshape (C_out, KH, KW), codes channel-major as dwconv2d_exp's."""
    w = codebook_weights(codes, codebook, bits=bits, wshape=wshape).transpose(1, 2, 0)
    return dwconv2d_s8(x, w, bias, mult, shift, **attrs)


def dense_expcb(x, codes, codebook, bias, mult, shift, *, bits, wshape, **attrs):
    """wshape (O, I)."""
    return dense_s8(x, codebook_weights(codes, codebook, bits=bits, wshape=wshape), bias, mult, shift, **attrs)


OPS = {f.__name__: f for f in (conv2d_exp, dwconv2d_exp, dense_exp, conv2d_expcb, dwconv2d_expcb, dense_expcb)}
EXP_OPS = tuple(OPS)
