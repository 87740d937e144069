"""TIR expressions shared by the kernel templates: the requantization of reference/arith.py in TIR."""

import contextlib

import numpy as np
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


# ---- expressions shared by the element-wise and copy kernels (built with TVM's IRBuilder) ------------------------
# Each step is bound to a variable (a Bind statement, a C local) in the loop body being built; no scratch buffer;
# Select only (see requantize_store on TVM's min/max operand caching).
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def c64(v):
    return tirx.const(int(v), I64)


def i64(x):
    return tirx.Cast(I64, x)  # a no-op on an int64 expression (the simplifier drops it)


def clamp_expr(v, lo, hi):
    """clamp(v, lo, hi) of an int64 expression (bound to a variable first)."""
    def body(t):
        return tirx.Select(t > c64(hi), c64(hi), tirx.Select(t < c64(lo), c64(lo), t))
    return let(v, body)


def let(value, body):
    """body(v) with v the value stored in a one-element int64 local of the IRBuilder frame being built (these
    helpers are called inside IRBuilder loop bodies): a value read several times is computed once, and it is
    opaque to TVM's simplifier, which otherwise re-derives bounds through every nested requantization (seconds to
    minutes per kernel). The C compiler keeps such locals in registers."""
    from tvm.script.ir_builder import tirx as IRT

    buf = IRT.alloc_buffer((1,), I64)
    IRT.buffer_store(buf, value, [0])
    return body(buf[0])


def requant_expr(x, mult, shift, lo, hi):
    """requantize(x, mult, shift) (reference/arith.py) as one int64 expression of the integer expression x, whose
    values lie in [lo, hi] (build-time bounds): the shift and multiplier are literals, and the int32 saturation of
    the left shift is emitted only where [lo, hi] << left can leave int32."""
    mult, shift = int(mult), int(shift)
    left, right = max(shift, 0), max(-shift, 0)
    if mult == 0:
        return c64(0)
    a = i64(x)
    if left:
        a = a * c64(1 << left)
    sat = lo * (1 << left) < _INT32_MIN or hi * (1 << left) > _INT32_MAX

    def srdhm(a):  # mult > 0, so the product has the sign of a
        if sat:
            a = clamp_expr(a, _INT32_MIN, _INT32_MAX)
        return tirx.truncdiv(a * c64(mult) + tirx.Select(a >= c64(0), c64(1 << 30), c64(1 - (1 << 30))),
                             c64(1 << 31))

    def rdbpot(q):  # rounding divide by 2^right, ties away from zero
        mask = (1 << right) - 1
        return (q >> c64(right)) + tirx.Select(
            (q & c64(mask)) > tirx.Select(q < c64(0), c64((mask >> 1) + 1), c64(mask >> 1)), c64(1), c64(0))

    return let(a, lambda av: let(srdhm(av), rdbpot) if right else srdhm(av))


def requant_range(lo, hi, mult, shift):
    """[min, max] of requantize over [lo, hi] (it is monotonic in x)."""
    from ...reference.arith import requantize

    r = requantize(np.array([lo, hi], np.int64), mult, shift)
    return int(r[0]), int(r[1])


def hwc(shape):
    """(H, W, C) of an NHWC activation; an (N, F) one is (1, 1, F)."""
    s = tuple(shape)
    return (s[1], s[2], s[3]) if len(s) == 4 else (1, 1, int(np.prod(s[1:], dtype=np.int64)))


def view(attrs, param, shape):
    """(row stride, pixel stride) of a kernel parameter: a strided view where the memory plan says so
    (attrs["layout"], codegen/memplan.py), else the dense NHWC strides of ``shape``."""
    h, w, c = hwc(shape)
    rs, ps = (attrs.get("layout") or {}).get(param, (w * c, c))
    return int(rs), int(ps)


def extent(shape, rs, ps):
    """Elements a view of ``shape`` with strides (rs, ps) spans from its first element."""
    h, w, c = hwc(shape)
    return (h - 1) * rs + (w - 1) * ps + c


# ---- IRBuilder helpers (kernels whose structure depends on the layer: n inputs, broadcasting) --------------------
@contextlib.contextmanager
def prim_func(names, dtypes):
    """Build a PrimFunc with pointer parameters ``names`` of ``dtypes``; yields (builder frame handles by name)
    and sets ``.func`` on the returned holder once the block ends."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as IRT

    holder = _Holder()
    with IRBuilder() as ib:
        with IRT.prim_func():
            IRT.func_attr({"tirx.noalias": True})
            holder.args = {n: IRT.arg(n, IRT.handle(d)) for n, d in zip(names, dtypes)}
            yield holder
    holder.func = ib.get()


class _Holder:
    args: dict
    func = None


def buffer(handle, dtype, n):
    from tvm.script.ir_builder import tirx as IRT

    return IRT.decl_buffer((max(int(n), 1),), dtype, data=handle)


def store(buf, value, index):
    from tvm.script.ir_builder import tirx as IRT

    IRT.buffer_store(buf, value, [index])


@contextlib.contextmanager
def elementwise_loops(out_shape, in_shapes):
    """Loops over the elements of an NHWC output; yields (output index, [index of each input]), inputs
    broadcasting (numpy rules: a dimension of 1 is read with stride 0). One flat loop when no input broadcasts."""
    from tvm.script.ir_builder import tirx as IRT

    H, W, C = hwc(out_shape)
    ins = [hwc(s) for s in in_shapes]
    if all(s == (H, W, C) for s in ins):
        with IRT.serial(0, H * W * C) as i:
            yield i, [i] * len(ins)
        return
    strides = [(w_ * c_ if h_ > 1 else 0, c_ if w_ > 1 else 0, 1 if c_ > 1 else 0) for h_, w_, c_ in ins]
    with IRT.grid(H, W, C) as (y, x, k):
        yield (y * W + x) * C + k, [y * a + x * b + k * c for a, b, c in strides]


def copy_block(src, src_base, src_strides, dst, dst_base, dst_strides, block, requant=None):
    """dst[dst_base + y*drs + x*dps + c] = f(src[src_base + y*srs + x*sps + c*scs]) over the (H, W, C) ``block``;
    f is the identity or, with ``requant`` = (in_zp, mult, shift, out_zp), TFLite's int8 -> int8
    requantization clamp(requantize(v - in_zp, mult, shift) + out_zp, -128, 127). Dimensions along which both
    sides are contiguous are merged, so a dense copy is one flat loop."""
    from tvm.script.ir_builder import tirx as IRT

    (srs, sps, scs), (drs, dps) = src_strides, dst_strides
    h, w, c = block
    dims = [[h, srs, drs], [w, sps, dps], [c, scs, 1]]
    for i in (1, 0):  # merge (W, C) then (H, W*C) where both strides chain
        n_in, s_in, d_in = dims[i + 1]
        n, s, d = dims[i]
        if (s == s_in * n_in and d == d_in * n_in) or n == 1:
            dims[i:i + 2] = [[n * n_in, s_in, d_in]]
    dims = [dm for dm in dims if dm[0] > 1] or [[1, 0, 0]]

    def value(v):
        if requant is None:
            return v
        zp, m, sh, out_zp = (int(x) for x in requant)
        r = requant_expr(i64(v) - c64(zp), m, sh, -128 - zp, 127 - zp) + c64(out_zp)
        return clamp_expr(r, -128, 127).astype("int8")

    with IRT.grid(*[dm[0] for dm in dims]) as vs:
        vs = [vs] if isinstance(vs, tirx.Var) else list(vs)
        si = src_base + sum(v * dm[1] for v, dm in zip(vs, dims))
        di = dst_base + sum(v * dm[2] for v, dm in zip(vs, dims))
        store(dst, value(src[si]), di)


def variadic_params(n_inputs):
    """Parameter names of a kernel with a variable number of inputs: x0 .. x{n-1}, y."""
    return [f"x{i}" for i in range(n_inputs)] + ["y"]


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
