"""TIR expressions shared by the kernel templates: the requantization of reference/arith.py in TIR."""

from tvm import tirx
from tvm.script import tirx as T

I64 = "int64"


@T.macro
def requantize_t4(acc, mult, shift, t, out_zp):
    """t[4] = requantize(acc, mult, shift) + out_zp (int64), TFLite MultiplyByQuantizedMultiplier computed in int64
    (see reference/arith.py) in the kernel's int64 scratch ``t`` (5 int64 elements), one slot per step.
    Multipliers are in [0, 2^31), so the SRDHM overflow case (both operands INT32_MIN) cannot occur and the
    product's sign is that of t[1].

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


@T.macro
def requantize_store(Y, idx, acc, mult, shift, t, out_zp, act_min, act_max):
    """Y[idx] = int8(clamp(requantize(acc, mult, shift) + out_zp, act_min, act_max)) (:func:`requantize_t4`)."""
    requantize_t4(acc, mult, shift, t, out_zp)
    Y[idx] = T.Cast("int8", T.Select(t[4] > T.int64(act_max), T.int64(act_max),
                                     T.Select(t[4] < T.int64(act_min), T.int64(act_min), t[4])))


@T.macro
def requantize_int32(Y, idx, acc, mult, shift, t, out_zp, act_min, act_max):
    """Y[idx] = int32(clamp(requantize(acc, mult, shift) + out_zp, act_min, act_max)), for int16 / wider
    intermediates kept in an int32 scratch (the RNN gates)."""
    requantize_t4(acc, mult, shift, t, out_zp)
    Y[idx] = T.Cast("int32", T.Select(t[4] > T.int64(act_max), T.int64(act_max),
                                      T.Select(t[4] < T.int64(act_min), T.int64(act_min), t[4])))
