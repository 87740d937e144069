"""ep_bconv2d_b1_s8: binary (XNOR-popcount) NHWC convolution with int8 output.

x: (1, H, W, Cw) packed input, w: (O, KH, KW, Cw) packed weights (layout, windows and popcount of
``binary_common``); bias, mult, shift: (O,) int32; y: (1, OH, OW, O) int8. For each output channel
acc = dot * 2^acc_shift + bias, then the TFLite requantization of reference/arith.py with out_zp and the
act_min / act_max clamp, bit for bit. Output channels are the outer loop, so the per-channel constants below
are computed once per channel; per output, the common case costs one multiply-accumulate:

  x = sat32(acc << left) is d * 2^(s + left) + (bias << left) in 32 bits while d is in [d_lo, d_hi] (the dots
      whose shifted accumulator stays in int32);
  SRDHM then RDBPOT are one rounding. SRDHM's nudge (2^30, or 1 - 2^30 below 0) and truncation make it
      floor((x * M + 2^30) / 2^31) for either sign; RDBPOT(m, e) is floor((m + 2^(e-1) - [m < 0]) / 2^e); nested
      floors give, for e >= 1,  r = floor((x * M + 2^30 + 2^(30+e) - [x * M < -2^30] * 2^31) / 2^(31+e)),
      the high word of one 64-bit multiply-accumulate shifted right by e - 1, where x * M < -2^30 is
      x < -floor(2^30 / M) (M in [0, 2^31)).
  Outputs outside [d_lo, d_hi], and channels with e = 0 (shift >= 0), take ep_requant64 (ep_kernels.h): the
  reference's arithmetic in int64, out of line. Shifts are in [-31, 30] (quantize_multiplier).
"""

from tvm.script import tirx as T

from .binary_common import U32, Scratches, geometry, pixel_loops

PARAMS = ["x", "w", "bias", "mult", "shift", "y"]
CONST = {"x", "w", "bias", "mult", "shift"}

I64 = "int64"
I32_MAX, I32_MIN = 2**31 - 1, -(2**31)


def _i64(v):
    return T.Cast(I64, v)


def _clamp(v, lo, hi):
    """int64 v clamped to [lo, hi] (int32 bounds), as int32."""
    return T.Cast("int32", T.Select(v > T.int64(hi), T.int64(hi), T.Select(v < T.int64(lo), T.int64(lo), v)))


def template(attrs, shapes):
    g = geometry(attrs, shapes, "bconv2d_b1_s8")
    H, W, CW, O, KH, KW, OH, OW = (g[k] for k in ("H", "W", "CW", "O", "KH", "KW", "OH", "OW"))
    if shapes["y"][3] != O:
        raise ValueError(f"bconv2d_b1_s8: y has {shapes['y'][3]} channels, weights {O}")
    s = int(attrs["acc_shift"])
    if not 0 <= s <= 30:
        raise ValueError(f"bconv2d_b1_s8: acc_shift {s} out of [0, 30]")
    zp, lo, hi = int(attrs["out_zp"]), int(attrs["act_min"]), int(attrs["act_max"])
    K = KH * KW * g["C"]  # |dot| <= K

    def body(X, Wt, B, M, S, Y):
        sc = Scratches(g, k=(16, "int32"), k64=(2, "int64"), p=(4, "int32"))
        k, k64, p = sc.k, sc.k64, sc.p
        with T.serial(0, O) as oc:
            k.reset()
            k64.reset()
            wb = k(oc * (KH * KW * CW))
            b, m, sh = k(B[oc]), k(M[oc]), k(S[oc])
            left = k(T.Select(sh > 0, sh, 0))
            e = k(T.Select(sh < 0, 0 - sh, 0))
            step = k(T.Cast("int32", T.Select(left < 32 - s, T.uint32(1) << T.Cast(U32, left + s), T.uint32(0))))
            x0 = k(T.Cast("int32", T.Cast(U32, b) << T.Cast(U32, left)))
            # dots whose shifted accumulator stays in int32: [d_lo, d_hi] within [-K, K]
            d_hi = k(_clamp(((_i64(T.int32(I32_MAX) >> left) - _i64(b)) >> T.int64(s)), -K - 1, K))
            d_lo = k(_clamp(T.int64(0) - ((_i64(T.int64(2**31) >> _i64(left)) + _i64(b)) >> T.int64(s)), -K, K + 1))
            rng = k(T.Select((e > 0) & (d_hi >= d_lo), d_hi - d_lo + 1, 0))
            x_neg = k(T.Select(m > 0, 0 - T.truncdiv(T.int32(2**30), m), T.int32(I32_MIN)))
            em1 = k(T.Select(e > 0, e - 1, 0))
            c_pos = k64(T.int64(2**30) + (T.int64(1) << _i64(em1 + 31)))
            c_neg = k64(c_pos - T.int64(2**31))

            def pixel(oy, ox, win, static):
                p.reset()
                pop = sc.popsum(win, X, Wt, oy, ox, wb, static)
                d = p(T.int32(win.cnt) - pop * 2)
                yv = p(T.int32(0))
                with T.If(T.Cast(U32, d - d_lo) < T.Cast(U32, rng)):
                    with T.Then():  # e >= 1, no saturation: one multiply-accumulate and the high word
                        xs = p(T.Cast("int32", T.Cast(U32, d) * T.Cast(U32, step) + T.Cast(U32, x0)))
                        v = _i64(xs) * _i64(m) + T.Select(xs < x_neg, c_neg, c_pos)
                        T.buffer_store(p.buf, (T.Cast("int32", v >> T.int64(32)) >> em1) + zp, [yv.indices[0]])
                    with T.Else():
                        r = p(T.call_extern("int32", "ep_requant64", _i64(d) * T.int64(1 << s) + _i64(b), m, sh))
                        T.buffer_store(p.buf, T.Select(r > hi - zp, T.int32(hi),
                                                       T.Select(r < lo - zp, T.int32(lo), r + zp)),
                                       [yv.indices[0]])
                if (lo, hi) == (-128, 127):
                    yc = T.call_extern("int32", "ep_sat8", yv)
                else:
                    yc = T.Select(yv > hi, T.int32(hi), T.Select(yv < lo, T.int32(lo), yv))
                T.buffer_store(Y, T.Cast("int8", yc), [(oy * OW + ox) * O + oc])

            pixel_loops(g, pixel)

    @T.prim_func
    def kernel(x: T.handle("uint32"), w: T.handle("uint32"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * CW,), "uint32", data=x)
        Wt = T.decl_buffer((O * KH * KW * CW,), "uint32", data=w)
        B = T.decl_buffer((O,), "int32", data=bias)
        M = T.decl_buffer((O,), "int32", data=mult)
        S = T.decl_buffer((O,), "int32", data=shift)
        Y = T.decl_buffer((OH * OW * O,), "int8", data=y)
        body(X, Wt, B, M, S, Y)

    return kernel
