"""ep_dwconv2d_exp: NHWC depthwise convolution with exponent-coded weights, int32 bias, per-channel
requantization; output channel c reads input channel c // depth_multiplier. Bit-exact with
reference.ops_exp.dwconv2d_exp.

codes: (C_out, row_bytes) uint8, row c holding the KH*KW codes of output channel c (channel-major, wshape
(C_out, KH, KW)). Output channels go in blocks (a multiple of depth_multiplier, as many as the stack budget
exp_common.SCRATCH_BYTES allows: all of them for usual layers); a block's weights are decoded once through
the 2^b-entry table into a (channel, tap) stack array, with zp * (sum of each channel's weights). Then for
each output pixel and channel the taps are one register accumulation: a window entirely inside the input is
fully unrolled (constant offsets, no bounds, the zero point applied once through the weight sum), a window
cut by the padding loops over its valid taps.

Strategies (attribute ``exp_strategy``, default STRATEGY): ``mul`` multiplies by the decoded weight;
``shift`` adds or subtracts x * 2^s (descriptors as in conv2d_exp, zero codes skipped). When a block of
depth_multiplier channels does not fit the budget, every weight is decoded where it is used (multiply).
"""

from __future__ import annotations

from tvm.script import tirx as T

from .exp_common import (code_rows, SCRATCH_BYTES, bounds_macro, check_exp_attrs, code_at, requantize_store32,
                         shift_table_macro, table_macro, window_geometry)

PARAMS = ["x", "codes", "bias", "mult", "shift", "y"]
CONST = {"x", "codes", "bias", "mult", "shift"}

STRATEGY = "mul"  # "mul" or "shift"; attribute exp_strategy overrides


def plan(attrs, shapes) -> dict:
    _, H, W, C = shapes["x"]
    CO, KH, KW = (int(v) for v in attrs["wshape"])
    DM = int(attrs.get("depth_multiplier", 1))
    if CO != C * DM:
        raise ValueError(f"dwconv2d_exp: weight channels {CO} != {C} x depth_multiplier {DM}")
    bits, top = check_exp_attrs("dwconv2d_exp", attrs)
    strategy = attrs.get("exp_strategy", STRATEGY)
    if strategy not in ("mul", "shift"):
        raise ValueError(f"dwconv2d_exp: exp_strategy must be 'mul' or 'shift', got {strategy!r}")
    KT = KH * KW
    per = 4 * (KT + 1)  # decoded weights + zero-point sum, per output channel
    cb = min(C, SCRATCH_BYTES // (per * DM))  # input channels per block
    p = dict(bits=bits, top=top, KT=KT, DM=DM, strategy=strategy)
    if cb == 0:
        return dict(p, path="direct", in_channels=1)
    return dict(p, path=strategy, in_channels=cb)


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    CO, KH, KW = (int(v) for v in attrs["wshape"])
    _, OH, OW, OY = shapes["y"]
    if OY != CO:
        raise ValueError(f"dwconv2d_exp: y has {OY} channels, weights {CO}")
    p = plan(attrs, shapes)
    bits, top, KT, DM, path, CB = p["bits"], p["top"], p["KT"], p["DM"], p["path"], p["in_channels"]
    RB = code_rows("dwconv2d_exp", shapes, CO, KT, bits)
    g = window_geometry("dwconv2d_exp", attrs, H, W, KH, KW, OH, OW)
    SH, SW, PT, PL, DH, DW = g["SH"], g["SW"], g["PT"], g["PL"], g["DH"], g["DW"]
    clipped = g["clip_v"] or g["clip_h"]
    in_zp, out_zp = int(attrs["in_zp"]), int(attrs["out_zp"])
    lo, hi = attrs["act_min"], attrs["act_max"]
    NT = 1 << bits
    NB, TAIL = C // CB, C % CB
    CBO = CB * DM
    fill_w = table_macro(bits, top, 0)
    fill_d = shift_table_macro(bits, top, 0)
    direct = path == "direct"

    # buffers: tables TB = [w | descriptor]; scratch SCR = [decoded block (channel, tap) | zp * weight sums];
    # scalars sc = [accumulator, x, descriptor, term, 2 decode temps, 4 window bounds]
    NTAB = 2 if path == "shift" else 1
    ZO = CBO * KT
    AC, XV, DV, TQ, T0, BD = 0, 1, 2, 3, 4, 6
    bounds = bounds_macro(g, BD)

    @T.macro
    def decode(Cb, TB, SCR, sc, c0, n):
        # output channels [c0 * DM, (c0 + n) * DM)
        for j in range(n * DM):
            sc[T0] = 0
            for tap in range(KT):
                sc[T0 + 1] = code_at(Cb, (c0 * DM + j) * RB, tap, bits, RB)
                if path == "shift":
                    SCR[j * KT + tap] = TB[NT + sc[T0 + 1]]
                else:
                    SCR[j * KT + tap] = TB[sc[T0 + 1]]
                sc[T0] = sc[T0] + TB[sc[T0 + 1]]
            SCR[ZO + j] = sc[T0] * in_zp

    @T.macro
    def mac(sc, xval, w):
        """sc[AC] += xval * w, w the decoded weight (mul) or its descriptor (shift)."""
        if path == "shift":
            sc[XV] = xval
            sc[DV] = w
            if sc[DV] >= 0:
                sc[TQ] = sc[XV] * T.shift_left(1, sc[DV] & 31)
                sc[AC] = T.Select((sc[DV] & 256) != 0, sc[AC] - sc[TQ], sc[AC] + sc[TQ])
        else:
            sc[AC] = sc[AC] + xval * w

    @T.macro
    def channel_full(X, SCR, B, M, S, Y, sc, rq, t, oy, ox, c0, ci, m):
        # whole window inside the input: unrolled taps, zero point through the weight sum
        sc[AC] = 0
        for ky in T.unroll(KH):
            for kx in T.unroll(KW):
                mac(sc, T.Cast("int32", X[((oy * SH - PT + ky * DH) * W + ox * SW - PL + kx * DW) * C + c0 + ci]),
                    SCR[(ci * DM + m) * KT + ky * KW + kx])
        requantize_store32(Y, (oy * OW + ox) * CO + (c0 + ci) * DM + m,
                         B[(c0 + ci) * DM + m] + (sc[AC] - SCR[ZO + ci * DM + m]), M[(c0 + ci) * DM + m],
                         S[(c0 + ci) * DM + m], rq, t, out_zp, lo, hi)

    @T.macro
    def channel_cut(X, SCR, B, M, S, Y, sc, rq, t, oy, ox, c0, ci, m):
        sc[AC] = 0
        for ky in T.serial(sc[BD], sc[BD + 1]):
            for kx in T.serial(sc[BD + 2], sc[BD + 3]):
                mac(sc, T.Cast("int32", X[((oy * SH - PT + ky * DH) * W + ox * SW - PL + kx * DW) * C + c0 + ci])
                    - in_zp, SCR[(ci * DM + m) * KT + ky * KW + kx])
        requantize_store32(Y, (oy * OW + ox) * CO + (c0 + ci) * DM + m, B[(c0 + ci) * DM + m] + sc[AC],
                         M[(c0 + ci) * DM + m], S[(c0 + ci) * DM + m], rq, t, out_zp, lo, hi)

    @T.macro
    def block(X, Cb, TB, SCR, B, M, S, Y, sc, rq, t, c0, n):
        decode(Cb, TB, SCR, sc, c0, n)
        for oy, ox in T.grid(OH, OW):
            if clipped:
                bounds(sc, oy, ox)
                if sc[BD] == 0 and sc[BD + 1] == KH and sc[BD + 2] == 0 and sc[BD + 3] == KW:
                    for ci, m in T.grid(n, DM):
                        channel_full(X, SCR, B, M, S, Y, sc, rq, t, oy, ox, c0, ci, m)
                else:
                    for ci, m in T.grid(n, DM):
                        channel_cut(X, SCR, B, M, S, Y, sc, rq, t, oy, ox, c0, ci, m)
            else:
                for ci, m in T.grid(n, DM):
                    channel_full(X, SCR, B, M, S, Y, sc, rq, t, oy, ox, c0, ci, m)

    @T.prim_func
    def kernel(x: T.handle("int8"), codes: T.handle("uint8"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Cb = T.decl_buffer((CO * RB,), "uint8", data=codes)
        B = T.decl_buffer((CO,), "int32", data=bias)
        M = T.decl_buffer((CO,), "int32", data=mult)
        S = T.decl_buffer((CO,), "int32", data=shift)
        Y = T.decl_buffer((OH * OW * CO,), "int8", data=y)
        if not g["reads_x"]:  # every window lies in the padding: y depends on the bias only
            T.evaluate(T.call_extern("int32", "(void)", x))
        TB = T.alloc_buffer((NT * NTAB,), "int32")
        sc = T.alloc_buffer((10,), "int32")
        rq = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((1,), "int64")
        fill_w(TB, 0)
        if direct:
            for oy, ox in T.grid(OH, OW):
                bounds(sc, oy, ox)
                for co in range(CO):
                    sc[AC] = B[co]
                    for ky in T.serial(sc[BD], sc[BD + 1]):
                        for kx in T.serial(sc[BD + 2], sc[BD + 3]):
                            sc[AC] = sc[AC] + (T.Cast("int32", X[((oy * SH - PT + ky * DH) * W + ox * SW - PL
                                                                   + kx * DW) * C + co // DM]) - in_zp) \
                                * TB[code_at(Cb, co * RB, ky * KW + kx, bits, RB)]
                    requantize_store32(Y, (oy * OW + ox) * CO + co, sc[AC], M[co], S[co], rq, t, out_zp, lo, hi)
        else:
            SCR = T.alloc_buffer((CBO * KT + CBO,), "int32")
            if path == "shift":
                fill_d(TB, NT)
            if NB == 1:
                block(X, Cb, TB, SCR, B, M, S, Y, sc, rq, t, 0, CB)
            else:
                for cb in range(NB):
                    block(X, Cb, TB, SCR, B, M, S, Y, sc, rq, t, cb * CB, CB)
            if TAIL > 0:
                block(X, Cb, TB, SCR, B, M, S, Y, sc, rq, t, NB * CB, TAIL)

    return kernel
