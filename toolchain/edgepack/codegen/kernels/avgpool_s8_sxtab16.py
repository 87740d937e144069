"""ep_avgpool_s8_sxtab16: int8 NHWC average pooling for cores with the DSP extension (C a multiple of 4),
y = round_half_away(S / d) as avgpool_s8 (reference/ops.py), the window sums taken 4 channels per word:

    lanes0 = sum over the in-bounds taps of SXTAB16 (channels c, c + 2 of the tap's word, 16-bit lanes)
    lanes1 = the same of SXTAB16 ROR #8 (channels c + 1, c + 3)

One LDR and two SXTAB16 per 4 channels and tap. Each lane holds an exact sum: at most KH*KW <= 255 taps of
|x| <= 128 is below 2^15 (the lowering refuses larger windows). The lanes are then sign-extended to int32, the
zero point of the counted padded taps added, and divided with rounding half away from zero.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .avgpool_s8 import divisor_macro, geometry

PARAMS = ["x", "y"]
CONST = {"x"}
MAX_TAPS = 255  # 255 * 128 < 2^15: a 16-bit lane holds the window sum


def scratch_bytes(attrs, shapes) -> int:
    return 0


def lower(attrs, shapes, consts):
    C = shapes["x"][3]
    kh, kw = attrs["kernel"]
    if C % 4:
        return None, f"{C} channels: not a multiple of 4"
    if kh * kw > MAX_TAPS:
        return None, f"window of {kh * kw} taps: a 16-bit lane sum needs at most {MAX_TAPS}"
    return dict(attrs), {}


def template(attrs, shapes):
    g = geometry(attrs, shapes)
    H, W, C, OH, OW, KH, KW, SH, SW, PT, PL, D = (g[k] for k in ("H", "W", "C", "OH", "OW", "KH", "KW", "SH", "SW",
                                                                "PT", "PL", "D"))
    padded, const_div = g["padded"], g["const_div"]
    divisor = divisor_macro(g)
    C4 = C // 4

    @T.macro
    def tap(X, acc, iy, ix, cg):
        acc[0] = T.call_extern("int32", "ep_sxtab16", acc[0],
                               T.call_extern("int32", "ep_ld32", T.address_of(X[(iy * W + ix) * C + cg * 4])))
        acc[1] = T.call_extern("int32", "ep_sxtab16_ror8", acc[1],
                               T.call_extern("int32", "ep_ld32", T.address_of(X[(iy * W + ix) * C + cg * 4])))

    @T.macro
    def finish(Y, s, d, base):
        # round half away from zero with C's truncating division (reference arith.round_div_away)
        if const_div:
            Y[base] = T.Cast("int8", T.call_extern("int32", "ep_sat8", T.truncdiv(
                T.Select(s >= 0, s + D // 2, s - D // 2), D)))
        else:
            Y[base] = T.Cast("int8", T.call_extern("int32", "ep_sat8", T.truncdiv(
                T.Select(s >= 0, s + d[1], s - d[1]), d[0])))

    @T.prim_func
    def kernel(x: T.handle("int8"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Y = T.decl_buffer((OH * OW * C,), "int8", data=y)
        acc = T.alloc_buffer((2,), "int32")
        d = T.alloc_buffer((3,), "int32")
        for oy, ox in T.grid(OH, OW):
            d[2] = 0
            divisor(d, oy, ox)
            for cg in range(C4):
                acc[0] = 0
                acc[1] = 0
                for ky in range(KH):
                    if padded:
                        if 0 <= oy * SH - PT + ky < H:
                            for kx in range(KW):
                                if 0 <= ox * SW - PL + kx < W:
                                    tap(X, acc, oy * SH - PT + ky, ox * SW - PL + kx, cg)
                    else:
                        for kx in range(KW):
                            tap(X, acc, oy * SH + ky, ox * SW + kx, cg)
                # lanes: channel 4cg + 0 and + 2 in acc[0], + 1 and + 3 in acc[1]
                finish(Y, T.Cast("int32", T.Cast("int16", acc[0])) + d[2], d, (oy * OW + ox) * C + cg * 4)
                finish(Y, T.Cast("int32", T.Cast("int16", acc[1])) + d[2], d, (oy * OW + ox) * C + cg * 4 + 1)
                finish(Y, T.shift_right(acc[0], 16) + d[2], d, (oy * OW + ox) * C + cg * 4 + 2)
                finish(Y, T.shift_right(acc[1], 16) + d[2], d, (oy * OW + ox) * C + cg * 4 + 3)

    return kernel
