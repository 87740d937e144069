"""ep_dwconv2d_expcb: NHWC depthwise convolution with exponential-codebook weights (``--weights expN``), int32
bias, per-channel requantization; output channel c reads input channel c // depth_multiplier: bit-exact with
reference.ops_exp.dwconv2d_expcb.

codes: (C_out, row_bytes) uint8, row c holding the KH*KW codes of output channel c (wshape (C_out, KH, KW),
channel-major as dwconv2d_exp); codebook (G, 2^(b-1)) int16, G = C_out or 1 (see conv2d_expcb). Channel by
channel: the signed table from the codebook row, the KH*KW weights decoded into the stack once, then every
output pixel is acc = bias + sum (x - in_zp) * w over the valid taps, requantized with
exp_common.requantize_store32. No unrolling (code size); every row fits the stack (KH*KW <= 2560 taps), else
the weight is decoded where it is used.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .exp_common import (code_rows, SCRATCH_BYTES, check_codebook, code_at, requantize_store32, signed_table_macro,
                         window_geometry)

PARAMS = ["x", "codes", "codebook", "bias", "mult", "shift", "y"]
CONST = {"x", "codes", "codebook", "bias", "mult", "shift"}


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    CO, KH, KW = (int(v) for v in attrs["wshape"])
    DM = int(attrs.get("depth_multiplier", 1))
    if CO != C * DM:
        raise ValueError(f"dwconv2d_expcb: weight channels {CO} != {C} x depth_multiplier {DM}")
    _, OH, OW, OY = shapes["y"]
    if OY != CO:
        raise ValueError(f"dwconv2d_expcb: y has {OY} channels, weights {CO}")
    bits, G, NC = check_codebook("dwconv2d_expcb", attrs, shapes, CO)
    KT = KH * KW
    RB = code_rows("dwconv2d_expcb", shapes, CO, KT, bits)
    g = window_geometry("dwconv2d_expcb", attrs, H, W, KH, KW, OH, OW)
    SH, SW, PT, PL, DH, DW = g["SH"], g["SW"], g["PT"], g["PL"], g["DH"], g["DW"]
    padded = g["clip_v"] or g["clip_h"]
    in_zp, out_zp = int(attrs["in_zp"]), int(attrs["out_zp"])
    lo, hi = attrs["act_min"], attrs["act_max"]
    decoded = 2 * KT <= SCRATCH_BYTES
    fill = signed_table_macro(bits, NC)

    def weight(Cb, TS, WD, oc, k):  # TIR expression: the int32 weight of tap k of channel oc
        return T.Cast("int32", WD[k]) if decoded else TS[code_at(Cb, oc * RB, k, bits, RB)]

    @T.macro
    def tap(X, Cb, TS, WD, acc, oc, oy, ox, ky, kx):
        acc[0] = acc[0] + (T.Cast("int32", X[((oy * SH - PT + ky * DH) * W + ox * SW - PL + kx * DW) * C
                                             + oc // DM]) - in_zp) * weight(Cb, TS, WD, oc, ky * KW + kx)

    @T.prim_func
    def kernel(x: T.handle("int8"), codes: T.handle("uint8"), codebook: T.handle("int16"), bias: T.handle("int32"),
               mult: T.handle("int32"), shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Cb = T.decl_buffer((CO * RB,), "uint8", data=codes)
        CBk = T.decl_buffer((G * NC,), "int16", data=codebook)
        B = T.decl_buffer((CO,), "int32", data=bias)
        M = T.decl_buffer((CO,), "int32", data=mult)
        S = T.decl_buffer((CO,), "int32", data=shift)
        Y = T.decl_buffer((OH * OW * CO,), "int8", data=y)
        if not g["reads_x"]:  # every window lies in the padding: y depends on the bias only
            T.evaluate(T.call_extern("int32", "(void)", x))
        TS = T.alloc_buffer((1 << bits,), "int32")
        WD = T.alloc_buffer((KT if decoded else 1,), "int16")
        acc = T.alloc_buffer((1,), "int32")
        rq = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((1,), "int64")
        if not decoded:  # the row buffer is a placeholder then
            T.evaluate(T.call_extern("int32", "(void)", WD.data))
        if G == 1:
            fill(TS, CBk, 0)
        for oc in range(CO):
            if G > 1:
                fill(TS, CBk, oc)
            if decoded:
                for k in range(KT):
                    WD[k] = T.Cast("int16", TS[code_at(Cb, oc * RB, k, bits, RB)])
            for oy, ox in T.grid(OH, OW):
                acc[0] = B[oc]
                for ky, kx in T.grid(KH, KW):
                    if padded:
                        if (0 <= oy * SH - PT + ky * DH < H) and (0 <= ox * SW - PL + kx * DW < W):
                            tap(X, Cb, TS, WD, acc, oc, oy, ox, ky, kx)
                    else:
                        tap(X, Cb, TS, WD, acc, oc, oy, ox, ky, kx)
                requantize_store32(Y, (oy * OW + ox) * CO + oc, acc[0], M[oc], S[oc], rq, t, out_zp, lo, hi)

    return kernel
