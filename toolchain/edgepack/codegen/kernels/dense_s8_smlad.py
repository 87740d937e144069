"""ep_dense_s8_smlad: int8 fully connected layer for cores with the DSP extension: the SMLAD GEMM of
conv2d_s8_smlad on a 1 x 1 image with F channels (one pixel: blocks of up to 5 output channels).

y[o] = clamp(requantize32(sum_k (x_k - in_zp) * w[o, k] + bias[o], mult[o], shift[o]) + out_zp), the reduction
over int16 columns of x - in_zp (scratch: F rounded up to 4, int16) and the zero-padded weight rows.
"""

from __future__ import annotations

import math

from . import conv2d_s8_smlad as conv

PARAMS = conv.PARAMS
CONST = conv.CONST


def _as_conv(attrs, shapes):
    f = math.prod(shapes["x"][1:])
    o, fw = shapes["w"]
    if fw != f:
        raise ValueError(f"dense_s8: weight columns {fw} != input features {f}")
    a = dict(attrs, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1))
    s = dict(shapes, x=(1, 1, 1, f), w=(o, 1, 1, f), y=(1, 1, 1, o))
    return a, s


def scratch_bytes(attrs, shapes) -> int:
    return conv.scratch_bytes(*_as_conv(attrs, shapes))


def lower(attrs, shapes, consts):
    return conv.lower(*_as_conv(attrs, shapes), consts)


def template(attrs, shapes):
    return conv.template(*_as_conv(attrs, shapes))


def schedule(sch, attrs, shapes):
    return conv.schedule(sch, *_as_conv(attrs, shapes))
