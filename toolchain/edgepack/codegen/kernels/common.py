"""TIR expressions shared by the kernel templates: the requantization of reference/arith.py in TIR."""

from tvm import tirx
from tvm.script import tirx as T

I64 = "int64"


@T.macro
def requantize_store(Y, idx, acc, mult, shift, t, out_zp, act_min, act_max):
    """Y[idx] = int8(clamp(requantize(acc, mult, shift) + out_zp, act_min, act_max)).

    TFLite MultiplyByQuantizedMultiplier computed in int64 (see reference/arith.py), using the kernel's
    int64 scratch ``t`` (5 int64 elements), one slot per step. Multipliers are in [0, 2^31), so the SRDHM overflow
    case (both operands INT32_MIN) cannot occur and the product's sign is that of t[1].

    Only Select, never min/max: TVM 0.27's C printer caches a min/max operand text per scope and reuses it
    after the buffer element it reads was overwritten (wrong code when two of these share a scope).
    """
    t[0] = T.Cast("int64", acc) << T.Cast("int64", T.Select(shift > 0, shift, 0))
    t[1] = T.Select(t[0] > T.int64(2147483647), T.int64(2147483647),
                    T.Select(t[0] < T.int64(-2147483648), T.int64(-2147483648), t[0]))
    t[2] = T.truncdiv(t[1] * T.Cast("int64", mult)
                      + T.Select(t[1] >= T.int64(0), T.int64(1073741824), T.int64(-1073741823)),
                      T.int64(2147483648))
    t[3] = T.Cast("int64", T.Select(shift < 0, 0 - shift, 0))
    t[4] = (t[2] >> t[3]) + T.Select((t[2] & ((T.int64(1) << t[3]) - T.int64(1)))
                                     > (((T.int64(1) << t[3]) - T.int64(1)) >> T.int64(1))
                                     + T.Select(t[2] < T.int64(0), T.int64(1), T.int64(0)),
                                     T.int64(1), T.int64(0)) + T.int64(out_zp)
    Y[idx] = T.Cast("int8", T.Select(t[4] > T.int64(act_max), T.int64(act_max),
                                     T.Select(t[4] < T.int64(act_min), T.int64(act_min), t[4])))





def right_shift(shift, left: bool):
    """e = max(-s, 0), the rounding right shift of requantize (just -s when no channel shifts left)."""
    return T.max(0 - shift, 0) if left else 0 - shift


def requantize32_store(Y, idx, acc, bias, mult, shift, half, e, left: bool, out_zp, lo, hi, full: bool):
    """Y[idx] = int8(clamp(requantize(acc + b, mult, shift) + out_zp, lo, hi)) in 32-bit instructions, as
    codegen/lower.py requantize32 states and proves (valid where the layer's lowering plan is ``fast``):

        2x = 2 acc + bias  (``bias`` = 2 b, doubled by the lowering)   or  (acc + bias) << (max(s, 0) + 1)
        q = SMMULR(2x, M) = (2x M + 2^31) >> 32,   r = (2q + 2^e + (q >> 31)) >> (e + 1)

    ``half`` = 2^e and ``e`` = right_shift(shift) are the caller's per-channel lets (one per channel, shared by
    its pixels); ``left``: whether any channel of the layer has s > 0 (then ``bias`` is b itself); ``out_zp``,
    ``lo``, ``hi``: expressions (constants, or loads of the layer's parameters). Clamps with one SSAT (ep_sat8)
    when ``full`` (the range is all of int8), else with comparisons (Select, never min/max: see
    requantize_store)."""

    @T.macro
    def store():
        x2: T.let[T.int32] = T.shift_left(acc + bias, T.max(shift, 0) + 1) if left else acc * 2 + bias
        q: T.let[T.int32] = T.call_extern("int32", "ep_smmulr", x2, mult)
        r: T.let[T.int32] = T.shift_right(q * 2 + half + T.shift_right(q, 31), e + 1) + out_zp
        if full:
            Y[idx] = T.Cast("int8", T.call_extern("int32", "ep_sat8", r))
        else:
            Y[idx] = T.Cast("int8", T.Select(r > hi, hi, T.Select(r < lo, lo, r)))

    return store


GEOMETRY = ("strides", "pads", "dilations", "depth_multiplier", "requant_left")


def layer_params(attrs, input_word: int) -> tuple:
    """(template attributes, the int32 'qp' array) of a scheduled kernel that reads its zero points and
    activation range at run time, so that layers of the same shapes share one kernel: qp = [in_zp,
    ``input_word`` (a word built from in_zp for the kernel's SIMD), out_zp, act_min, act_max]. The template keeps
    the geometry (GEOMETRY: not the layer's annotations, scales or names) and whether the range is all of int8
    (one SSAT, else comparisons)."""
    import numpy as np

    a = {k: v for k, v in attrs.items() if k in GEOMETRY}
    a["act_full"] = (int(attrs["act_min"]), int(attrs["act_max"])) == (-128, 127)
    qp = np.array([int(attrs["in_zp"]), int(input_word), int(attrs["out_zp"]), int(attrs["act_min"]),
                   int(attrs["act_max"])], np.int32)
    return a, qp


QP_IN_ZP, QP_INPUT_WORD, QP_OUT_ZP, QP_MIN, QP_MAX = range(5)
