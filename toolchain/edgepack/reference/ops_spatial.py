"""Integer ops for layout, resizing and transposed convolution (issue 14 part B): the specification.

* ``transpose_s8``: y = x.reshape(shape).transpose(perm), a copy in memory order; the quantizer gives it the
  NHWC-memory view of a framework transpose (or of a channel shuffle), with axes that stay together merged.
* ``resize_nearest_s8``: y[n, oy, ox, c] = x[n, iy[oy], ix[ox], c]; ``iy``, ``ix`` are build-time tables made
  by :func:`nearest_table`, TensorFlow Lite's RESIZE_NEAREST_NEIGHBOR (GetNearestNeighbor: a float32 scale,
  floor, or round half away from zero with align_corners, clamped). Output scale and zero point = input's.
* ``resize_bilinear_s8``: TensorFlow Lite's int8 RESIZE_BILINEAR (reference_ops::ResizeBilinearInteger):
  10-bit fixed-point scale s10 = (1024 * in + out / 2) / out (align_corners: (1024 * (in - 1) + (out - 1) / 2)
  / (out - 1)); per output index o: v = o * s10 (half_pixel_centers: + s10 / 2 - 512), lower = max(v / 1024, 0),
  upper = min((v + 1023) / 1024, in - 1), f = v - 1024 * lower (C division, truncating); the raw int8 inputs
  weighted (1024 - fy)(1024 - fx), fy (1024 - fx), (1024 - fy) fx, fy fx summed exactly (|sum| < 2^29, so
  int32), then y = (sum + (sum > 0 ? 2^19 : -2^19)) / 2^20 truncating (round half away from zero). Output
  scale and zero point = input's. Where this differs from PyTorch's float bilinear: the scale is rounded to
  1/1024 (exact for power-of-two factors; 341/1024 for x3) and the fractions too, so an output may differ from
  the correctly rounded float result by one step.
* ``conv_transpose2d_s8``: TensorFlow Lite's int8 TRANSPOSE_CONV (reference_integer_ops::TransposeConv),
  acc[o] = bias[o] + sum over input pixels and taps with iy * sh + ky * dh - pt = oy (and the same for x) of
  (x - in_zp) * w[o, ky, kx, i]; per-channel requantization as conv2d_s8; output_padding only extends the
  output at the bottom / right. The scatter of TFLite and the gather of the kernel sum the same integers.
"""

from __future__ import annotations

import numpy as np


def transpose_s8(x, *, shape, perm, **_):
    x = np.asarray(x)
    return x.reshape((x.shape[0],) + tuple(shape[1:])).transpose(perm)


def nearest_table(out_size: int, in_size: int, align_corners: bool, half_pixel_centers: bool) -> np.ndarray:
    """TFLite GetNearestNeighbor for every output index, in float32 as TFLite computes it."""
    f32 = np.float32
    if align_corners and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    v = ((np.arange(out_size).astype(f32) + f32(0.5 if half_pixel_centers else 0.0)) * scale).astype(np.float64)
    r = np.sign(v) * np.floor(np.abs(v) + 0.5) if align_corners else np.floor(v)  # std::round: half away
    r = np.minimum(r, in_size - 1)
    if half_pixel_centers:
        r = np.maximum(r, 0)
    return r.astype(np.int32)


def resize_nearest_s8(x, iy, ix, **_):
    x = np.asarray(x)
    return x[:, np.asarray(iy, np.int64)][:, :, np.asarray(ix, np.int64)]


def bilinear_scale10(in_size: int, out_size: int, align_corners: bool) -> int:
    if align_corners and out_size > 1:
        return ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    return ((1 << 10) * in_size + out_size // 2) // out_size


def bilinear_axis(out_size, in_size, align_corners, half_pixel_centers):
    """(lower, upper, fraction) of every output index along one axis, in TFLite's 10-bit fixed point."""
    s = bilinear_scale10(in_size, out_size, align_corners)
    v = np.arange(out_size, dtype=np.int64) * s + ((s // 2 - (1 << 9)) if half_pixel_centers else 0)
    lo = np.maximum(np.where(v >= 0, v // 1024, -((-v) // 1024)), 0)  # C division truncates toward zero
    hi = np.minimum((v + 1023) // 1024, in_size - 1)  # v >= -512: the numerator is positive
    return lo, hi, v - 1024 * lo


def resize_bilinear_s8(x, *, size, align_corners, half_pixel_centers, **_):
    x = np.asarray(x, np.int64)
    y0, y1, fy = bilinear_axis(size[0], x.shape[1], align_corners, half_pixel_centers)
    x0, x1, fx = bilinear_axis(size[1], x.shape[2], align_corners, half_pixel_centers)
    fy, fx = fy[None, :, None, None], fx[None, None, :, None]
    rows0, rows1 = x[:, y0], x[:, y1]
    acc = (rows0[:, :, x0] * (1024 - fy) * (1024 - fx) + rows1[:, :, x0] * fy * (1024 - fx)
           + rows0[:, :, x1] * (1024 - fy) * fx + rows1[:, :, x1] * fy * fx)
    r = np.where(acc > 0, acc + (1 << 19), acc - (1 << 19))
    return (np.sign(r) * (np.abs(r) >> 20)).astype(np.int8)


def conv_transpose2d_s8(x, w, bias, mult, shift, *, strides, pads, output_padding, dilations, in_zp, out_zp,
                        act_min, act_max, **_):
    """w is (O, KH, KW, I); see the module docstring."""
    from .ops import _finish  # (ops imports this module)

    x = np.asarray(x, np.int64) - in_zp
    n, h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    (sh, sw), (pt, pl, pb, pr), (oph, opw), (dh, dw) = strides, pads, output_padding, dilations
    oh = (h - 1) * sh - pt - pb + dh * (kh - 1) + 1 + oph
    ow = (wd - 1) * sw - pl - pr + dw * (kw - 1) + 1 + opw
    fh = max((h - 1) * sh + dh * (kh - 1) + 1, pt + oh)
    fw = max((wd - 1) * sw + dw * (kw - 1) + 1, pl + ow)
    full = np.zeros((n, fh, fw, o), np.int64)
    for i in range(kh):
        for j in range(kw):
            contrib = np.rint(x.astype(np.float64) @ w[:, i, j, :].astype(np.float64).T).astype(np.int64)
            full[:, i * dh: i * dh + (h - 1) * sh + 1: sh, j * dw: j * dw + (wd - 1) * sw + 1: sw] += contrib
    acc = full[:, pt:pt + oh, pl:pl + ow] + np.asarray(bias, np.int64)
    return _finish(acc, mult, shift, out_zp, act_min, act_max)


def conv_transpose_taps(xshape, wshape, yshape, attrs) -> int:
    """Multiply-accumulates of a conv_transpose2d_s8 layer: (input pixel, tap) pairs that land in the output,
    times input and output channels."""
    (_, h, w, c), (o, kh, kw, _) = xshape, wshape
    (sh, sw), (pt, pl, _, _), (dh, dw) = attrs["strides"], attrs["pads"], attrs["dilations"]

    def axis(n_in, k, s, p, d, n_out):
        return sum(1 for i in range(n_in) for j in range(k) if 0 <= i * s + j * d - p < n_out)

    return axis(h, kh, sh, pt, dh, yshape[1]) * axis(w, kw, sw, pl, dw, yshape[2]) * c * o


OPS = {f.__name__: f for f in (transpose_s8, resize_nearest_s8, resize_bilinear_s8, conv_transpose2d_s8)}
