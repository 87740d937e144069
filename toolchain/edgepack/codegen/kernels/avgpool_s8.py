"""ep_avgpool_s8: int8 NHWC average pooling, y = round_half_away(S / d) (TFLite's AveragePool, reference/ops.py).

S is the sum of the raw int8 values over the in-bounds taps, plus zp for each padded tap when
count_include_pad (added once per output pixel: (KH*KW - in-bounds taps) * zp). d is KH*KW when
count_include_pad (or without padding), a compile-time constant the C compiler turns into a multiplication;
otherwise the in-bounds tap count of the window, computed once per output pixel. The sums of a block of
channels are kept in a small int32 array while the taps are walked, so the innermost loop runs over
contiguous channels.
"""

from tvm.script import tirx as T

PARAMS = ["x", "y"]
CONST = {"x"}

ACC_WORDS = 32  # int32 sums per channel block (stack: 128 bytes)


def _any_tap_in_bounds(n_in, n_out, k, s, p, d=1):
    """Whether some window tap along one axis reads the input (else the kernel never reads x)."""
    return any(0 <= o * s - p + i * d < n_in for o in range(n_out) for i in range(k))


def geometry(attrs, shapes) -> dict:
    """The pooling's sizes and the divisor rules (shared with avgpool_s8_sxtab16)."""
    _, H, W, C = shapes["x"]
    _, OH, OW, _ = shapes["y"]
    (KH, KW), (SH, SW), (PT, PL, _, _) = attrs["kernel"], attrs["strides"], attrs["pads"]
    zp = int(attrs["zp"])
    padded = any(attrs["pads"])
    return dict(H=H, W=W, C=C, OH=OH, OW=OW, KH=KH, KW=KW, SH=SH, SW=SW, PT=PT, PL=PL, zp=zp, padded=padded,
                D=KH * KW, const_div=bool(attrs["count_include_pad"]) or not padded,
                pad_zp=bool(attrs["count_include_pad"]) and padded and zp != 0)  # padded taps add zp each


def divisor_macro(g: dict):
    """Macro setting, for output pixel (oy, ox), d[0] = the divisor and d[1] = d[0] / 2 where it is not the
    constant KH*KW (the in-bounds tap count; an all-padding window, sum 0, divides by 1), and d[2] = zp for
    each padded tap the constant divisor counts (else d[2] is not written)."""
    H, W, KH, KW, SH, SW, PT, PL, D, zp = (g[k] for k in ("H", "W", "KH", "KW", "SH", "SW", "PT", "PL", "D", "zp"))
    const_div, pad_zp = g["const_div"], g["pad_zp"]

    @T.macro
    def divisor(d, oy, ox):
        if not const_div:
            d[0] = T.max(T.max(T.min(oy * SH - PT + KH, H) - T.max(oy * SH - PT, 0), 0)
                         * T.max(T.min(ox * SW - PL + KW, W) - T.max(ox * SW - PL, 0), 0), 1)
            d[1] = d[0] >> 1
        if pad_zp:
            d[2] = (D - T.max(T.min(oy * SH - PT + KH, H) - T.max(oy * SH - PT, 0), 0)
                    * T.max(T.min(ox * SW - PL + KW, W) - T.max(ox * SW - PL, 0), 0)) * zp

    return divisor


def template(attrs, shapes):
    g = geometry(attrs, shapes)
    H, W, C, OH, OW, KH, KW, SH, SW, PT, PL, D = (g[k] for k in ("H", "W", "C", "OH", "OW", "KH", "KW", "SH", "SW",
                                                                "PT", "PL", "D"))
    padded, const_div, pad_zp = g["padded"], g["const_div"], g["pad_zp"]
    CB = min(C, ACC_WORDS)
    NB, TAIL = C // CB, C % CB
    reads_x = _any_tap_in_bounds(H, OH, KH, SH, PT) and _any_tap_in_bounds(W, OW, KW, SW, PL)
    divisor = divisor_macro(g)

    @T.macro
    def finish(Y, acc, d, oy, ox, c0, n):
        # round half away from zero with C's truncating division (reference arith.round_div_away)
        if const_div:
            for j in range(n):
                Y[(oy * OW + ox) * C + c0 + j] = T.Cast("int8", T.max(T.min(T.truncdiv(
                    T.Select(acc[j] >= 0, acc[j] + D // 2, acc[j] - D // 2), D), 127), -128))
        else:
            for j in range(n):
                Y[(oy * OW + ox) * C + c0 + j] = T.Cast("int8", T.max(T.min(T.truncdiv(
                    T.Select(acc[j] >= 0, acc[j] + d[1], acc[j] - d[1]), d[0]), 127), -128))

    @T.macro
    def block(X, Y, acc, d, oy, ox, c0, n):
        for j in range(n):
            if pad_zp:
                acc[j] = d[2]
            else:
                acc[j] = 0
        for ky in range(KH):
            if padded:
                if 0 <= oy * SH - PT + ky < H:
                    for kx in range(KW):
                        if 0 <= ox * SW - PL + kx < W:
                            for j in range(n):
                                acc[j] = acc[j] + T.Cast("int32", X[((oy * SH - PT + ky) * W + ox * SW - PL + kx)
                                                                    * C + c0 + j])
            else:
                for kx in range(KW):
                    for j in range(n):
                        acc[j] = acc[j] + T.Cast("int32", X[((oy * SH + ky) * W + ox * SW + kx) * C + c0 + j])
        finish(Y, acc, d, oy, ox, c0, n)

    @T.prim_func
    def kernel(x: T.handle("int8"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Y = T.decl_buffer((OH * OW * C,), "int8", data=y)
        if not reads_x:
            T.evaluate(T.call_extern("int32", "(void)", x))  # every window lies in the padding
        acc = T.alloc_buffer((CB,), "int32")
        if const_div and not pad_zp:
            d = acc  # unused
        else:
            d = T.alloc_buffer((3,), "int32")
        for oy, ox in T.grid(OH, OW):
            divisor(d, oy, ox)
            if NB == 1:
                block(X, Y, acc, d, oy, ox, 0, CB)
            else:
                for cb in range(NB):
                    block(X, Y, acc, d, oy, ox, cb * CB, CB)
            if TAIL > 0:
                block(X, Y, acc, d, oy, ox, NB * CB, TAIL)

    return kernel
