"""ep_add_s8: int8 element-wise addition (TFLite ADD) with per-tensor compile-time requantization.

va = requantize((a - a_zp) << left_shift, a_mult, a_shift), vb likewise, and
y = clamp(requantize(va + vb, out_mult, out_shift) + out_zp, act_min, act_max) (reference/arith.py).

All multipliers and shifts are compile-time constants, so each requantization is specialised: the shifts are
literal, the int32 saturation is emitted only where the value range (computed here over all 256 int8 inputs
with the reference arithmetic) can exceed int32, and left shifts are multiplications by 2^k (defined in C for
negative values).
"""

import math

import numpy as np
from tvm.script import tirx as T

from ...reference.arith import INT32_MAX, INT32_MIN, requantize

PARAMS = ["a", "b", "y"]
CONST = {"a", "b"}


def _requant_macro(mult, shift, lo, hi, src, base):
    """Macro computing requantize(t[src], mult, shift) for t[src] known to lie in [lo, hi].

    Each step writes its own element of the int64 scratch t (slots base .. base + 3), never one it has
    already written: TVM's C code generator caches the text of a min/max operand such as ``t_ptr[k]`` in a
    local for the rest of the scope, so re-reading a rewritten element through min/max would use the stale
    value. Returns (macro, slot of the result).
    """
    mult, shift = int(mult), int(shift)
    left, right = max(shift, 0), max(-shift, 0)
    scale = 1 << left
    sat = lo * scale < INT32_MIN or hi * scale > INT32_MAX
    mask = (1 << right) - 1
    half = mask >> 1
    i_sh = base if left > 0 else src  # x << left, as a multiplication
    i_sat = base + 1 if sat else i_sh  # saturated to int32
    i_mul = base + 2  # SRDHM
    i_out = base + 3 if right > 0 else i_mul  # rounding divide by 2^right

    @T.macro
    def requant(t):
        if left > 0:
            t[i_sh] = t[src] * T.int64(scale)
        if sat:
            t[i_sat] = T.max(T.min(t[i_sh], T.int64(INT32_MAX)), T.int64(INT32_MIN))
        if mult == 0:
            t[i_mul] = T.int64(0)
        else:
            # mult >= 0, so the product has the sign of t[i_sat]
            t[i_mul] = T.truncdiv(t[i_sat] * T.int64(mult) + T.Select(t[i_sat] >= T.int64(0), T.int64(1 << 30),
                                                                      T.int64(1 - (1 << 30))), T.int64(1 << 31))
        if right > 0:
            # ties away from zero
            t[i_out] = (t[i_mul] >> T.int64(right)) + T.Select(
                (t[i_mul] & T.int64(mask)) > T.Select(t[i_mul] < T.int64(0), T.int64(half + 1), T.int64(half)),
                T.int64(1), T.int64(0))

    return requant, i_out


def _range(values):
    return int(np.min(values)), int(np.max(values))


def template(attrs, shapes):
    if tuple(shapes["a"]) != tuple(shapes["b"]):
        raise ValueError(f"add_s8: operands must have the same shape, got {shapes['a']} and {shapes['b']}")
    N = math.prod(shapes["a"][1:])
    a_zp, b_zp, out_zp = int(attrs["a_zp"]), int(attrs["b_zp"]), int(attrs["out_zp"])
    ls = int(attrs["left_shift"])
    lo, hi = int(attrs["act_min"]), int(attrs["act_max"])
    q = np.arange(-128, 128, dtype=np.int64)
    xa, xb = (q - a_zp) << ls, (q - b_zp) << ls
    va = requantize(xa, attrs["a_mult"], attrs["a_shift"])
    vb = requantize(xb, attrs["b_mult"], attrs["b_shift"])
    va_lo, va_hi = _range(va)
    vb_lo, vb_hi = _range(vb)
    # scratch slots: 0 = a term, 1 = b term, 2..5 a's steps, 6..9 b's, 10 = sum, 11..14 the output's
    req_a, ra = _requant_macro(attrs["a_mult"], attrs["a_shift"], *_range(xa), 0, 2)
    req_b, rb = _requant_macro(attrs["b_mult"], attrs["b_shift"], *_range(xb), 1, 6)
    req_o, ro = _requant_macro(attrs["out_mult"], attrs["out_shift"], va_lo + vb_lo, va_hi + vb_hi, 10, 11)
    scale = 1 << ls
    fits32 = all(INT32_MIN <= v <= INT32_MAX for v in (*_range(xa), *_range(xb)))

    @T.prim_func
    def kernel(a: T.handle("int8"), b: T.handle("int8"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        A = T.decl_buffer((N,), "int8", data=a)
        B = T.decl_buffer((N,), "int8", data=b)
        Y = T.decl_buffer((N,), "int8", data=y)
        t = T.alloc_buffer((15,), "int64")
        for i in range(N):
            if fits32:
                t[0] = T.Cast("int64", (T.Cast("int32", A[i]) - a_zp) * scale)
                t[1] = T.Cast("int64", (T.Cast("int32", B[i]) - b_zp) * scale)
            else:
                t[0] = T.Cast("int64", T.Cast("int32", A[i]) - a_zp) * T.int64(scale)
                t[1] = T.Cast("int64", T.Cast("int32", B[i]) - b_zp) * T.int64(scale)
            req_a(t)
            req_b(t)
            t[10] = t[ra] + t[rb]
            req_o(t)
            Y[i] = T.Cast("int8", T.max(T.min(t[ro] + T.int64(out_zp), T.int64(hi)), T.int64(lo)))

    return kernel
