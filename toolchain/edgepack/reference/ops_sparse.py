"""Arithmetic of the sparse int8 weight layers (``--weights sparse``): the specification.

The weights are the int8 layer's, stored as CSR or bitmask rows (``pack.sparse``); the arithmetic is exactly
the int8 layer's (``reference.ops``): int32 accumulation of (x - in_zp) * w over the window (padding taps add
0), plus the int32 bias, TFLite requantization, clamp. A kernel skips the zero weights, which add nothing, so
the integers are the same.
"""

from __future__ import annotations

from ..pack.sparse import unpack_bitmask, unpack_csr
from .ops import conv2d_s8, dense_s8


def conv2d_s8_csr(x, values, index, rowptr, bias, mult, shift, *, wshape, **attrs):
    """wshape (O, KH, KW, I): rows in OHWI order."""
    return conv2d_s8(x, unpack_csr(values, index, rowptr, wshape), bias, mult, shift, **attrs)


def dense_s8_csr(x, values, index, rowptr, bias, mult, shift, *, wshape, **attrs):
    """wshape (O, I)."""
    return dense_s8(x, unpack_csr(values, index, rowptr, wshape), bias, mult, shift, **attrs)


def conv2d_s8_bitmask(x, values, mask, rowptr, bias, mult, shift, *, wshape, **attrs):
    return conv2d_s8(x, unpack_bitmask(values, mask, rowptr, wshape), bias, mult, shift, **attrs)


def dense_s8_bitmask(x, values, mask, rowptr, bias, mult, shift, *, wshape, **attrs):
    return dense_s8(x, unpack_bitmask(values, mask, rowptr, wshape), bias, mult, shift, **attrs)


OPS = {f.__name__: f for f in (conv2d_s8_csr, dense_s8_csr, conv2d_s8_bitmask, dense_s8_bitmask)}
SPARSE_OPS = tuple(OPS)
