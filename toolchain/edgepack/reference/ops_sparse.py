"""Arithmetic of the sparse int8 weight layers (``--weights sparse``): the specification.

The weights are the int8 layer's, stored in compressed sparse rows (``pack.sparse``); the arithmetic is
exactly the int8 layer's (``reference.ops``): int32 accumulation of (x - in_zp) * w over the window (padding
taps add 0), plus the int32 bias, TFLite requantization, clamp. A kernel visits only the stored nonzeros; the
weights it skips are 0 and add nothing, so the integers are the same.
"""

from __future__ import annotations

from ..pack.sparse import unpack
from .ops import conv2d_s8, dense_s8


def conv2d_s8_sparse(x, values, index, rowptr, bias, mult, shift, *, wshape, **attrs):
    """wshape (O, KH, KW, I): rows in OHWI order."""
    return conv2d_s8(x, unpack(values, index, rowptr, wshape), bias, mult, shift, **attrs)


def dense_s8_sparse(x, values, index, rowptr, bias, mult, shift, *, wshape, **attrs):
    """wshape (O, I)."""
    return dense_s8(x, unpack(values, index, rowptr, wshape), bias, mult, shift, **attrs)


OPS = {f.__name__: f for f in (conv2d_s8_sparse, dense_s8_sparse)}
