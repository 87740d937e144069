"""Fixed-point arithmetic of the integer kernels: the specification every C kernel must equal.

It is TensorFlow Lite's integer requantization (the one CMSIS-NN and TFLM follow), with one change that makes
it free of undefined behaviour in C: the left shift of a multiplier > 1 is done in 64 bits and saturated to
int32 before the high multiply (TFLite shifts in int32 and may overflow).

    requantize(x, M, s) = RDBPOT(SRDHM(sat32(x << max(s, 0)), M), max(-s, 0))

SRDHM(a, b)   = saturating rounding doubling high multiply: (a*b + nudge) / 2^31 truncated, where nudge is
                2^30 for a*b >= 0 and 1 - 2^30 otherwise; SRDHM(INT32_MIN, INT32_MIN) = INT32_MAX.
RDBPOT(x, e)  = rounding divide by 2^e, ties away from zero: (x >> e) + (rem > thr), with rem = x & (2^e-1)
                and thr = (2^e-1) >> 1, plus 1 when x < 0.

All functions take and return numpy int64 arrays holding int32 values.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Return (M, s) with real = M * 2^(s - 31), M in [2^30, 2^31) (TFLite QuantizeMultiplier)."""
    if real == 0.0:
        return 0, 0
    if not np.isfinite(real) or real < 0:
        raise ValueError(f"multiplier must be finite and non-negative, got {real}")
    q, shift = math.frexp(real)
    m = int(round(q * (1 << 31)))
    if m == (1 << 31):
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"multiplier {real} is too large for int32 requantization")
    return m, shift


def sat32(x):
    return np.clip(x, INT32_MIN, INT32_MAX)


def srdhm(a, b):
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b  # |a*b| <= 2^62 fits int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    q = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C division truncates toward zero
    return np.where(overflow, INT32_MAX, q).astype(np.int64)


def rdbpot(x, e):
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(e, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def requantize(x, mult, shift):
    """TFLite MultiplyByQuantizedMultiplier on int32 values (see module docstring)."""
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rdbpot(srdhm(sat32(x << left), mult), right)


def round_div_away(num, den):
    """num / den rounded half away from zero, C truncating division (den > 0)."""
    num = np.asarray(num, dtype=np.int64)
    adj = np.where(num >= 0, num + den // 2, num - den // 2)
    return np.where(adj >= 0, adj // den, -((-adj) // den))
