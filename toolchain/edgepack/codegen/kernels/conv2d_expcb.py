"""ep_conv2d_expcb: NHWC convolution with exponential-codebook weights (``--weights expN``), int32 bias,
per-channel requantization: bit-exact with reference.ops_exp.conv2d_expcb.

codes: (O, row_bytes) uint8, row o holding the K = KH*KW*I codes of output channel o in (KH, KW, I) order
(pack.expcodes); codebook: (G, 2^(b-1)) int16, G = O (per channel) or 1 (per layer), entry 0 the zero. The
weight of code c in channel o is sign(c) * codebook[g, c & (2^(b-1) - 1)], g = o or 0.

Output channel by output channel: a 2^b-entry signed table (TS) is built from the channel's codebook row
(once for a per-layer codebook), the channel's K codes are decoded through it into an int16 row on the stack
(WD, at most exp_common.SCRATCH_BYTES), then every output pixel is acc = bias + sum (x - in_zp) * WD over
the window's valid taps, as conv2d_s8 does, requantized with exp_common.requantize_store32. Loops are not
unrolled: the kernel's code stays close to conv2d_s8's (a decode loop and the table more). When the row does
not fit the stack (K > SCRATCH_BYTES / 2) each weight is decoded where it is used (``direct``).

The int32 accumulator cannot overflow: the packer proves |bias| + 255 * sum |w| < 2^31 per channel
(compress.quantize._exp_layer).
"""

from __future__ import annotations

from tvm.script import tirx as T

from .exp_common import (SCRATCH_BYTES, check_codebook, code_at, requantize_store32, row_bytes, signed_table_macro,
                         window_geometry)

PARAMS = ["x", "codes", "codebook", "bias", "mult", "shift", "y"]
CONST = {"x", "codes", "codebook", "bias", "mult", "shift"}


def plan(attrs, shapes) -> dict:
    """"decoded" (the channel's row decoded once into the stack) or "direct" (decoded at every use)."""
    O, KH, KW, I = (int(v) for v in attrs["wshape"])
    K = KH * KW * I
    return {"path": "decoded" if 2 * K <= SCRATCH_BYTES else "direct", "K": K}


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    O, KH, KW, I = (int(v) for v in attrs["wshape"])
    if I != C:
        raise ValueError(f"conv2d_expcb: weights have {I} input channels, input has {C}")
    _, OH, OW, OY = shapes["y"]
    if OY != O:
        raise ValueError(f"conv2d_expcb: y has {OY} channels, weights {O}")
    bits, G, NC = check_codebook("conv2d_expcb", attrs, shapes, O)
    K = KH * KW * C
    RB = row_bytes(K, bits)
    if tuple(shapes["codes"]) != (O, RB):
        raise ValueError(f"conv2d_expcb: codes shape {tuple(shapes['codes'])} != ({O}, {RB})")
    g = window_geometry("conv2d_expcb", attrs, H, W, KH, KW, OH, OW)
    SH, SW, PT, PL, DH, DW = g["SH"], g["SW"], g["PT"], g["PL"], g["DH"], g["DW"]
    padded = g["clip_v"] or g["clip_h"]
    in_zp, out_zp = int(attrs["in_zp"]), int(attrs["out_zp"])
    lo, hi = attrs["act_min"], attrs["act_max"]
    decoded = plan(attrs, shapes)["path"] == "decoded"
    fill = signed_table_macro(bits, NC)

    def weight(Cb, TS, WD, oc, k):  # TIR expression: the int32 weight k of channel oc
        return T.Cast("int32", WD[k]) if decoded else TS[code_at(Cb, oc * RB, k, bits, RB)]

    @T.macro
    def taps(X, Cb, TS, WD, acc, oc, oy, ox, ky, kx):
        for ic in range(C):
            acc[0] = acc[0] + (T.Cast("int32", X[((oy * SH - PT + ky * DH) * W + ox * SW - PL + kx * DW) * C + ic])
                               - in_zp) * weight(Cb, TS, WD, oc, (ky * KW + kx) * C + ic)

    @T.prim_func
    def kernel(x: T.handle("int8"), codes: T.handle("uint8"), codebook: T.handle("int16"), bias: T.handle("int32"),
               mult: T.handle("int32"), shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Cb = T.decl_buffer((O * RB,), "uint8", data=codes)
        CBk = T.decl_buffer((G * NC,), "int16", data=codebook)
        B = T.decl_buffer((O,), "int32", data=bias)
        M = T.decl_buffer((O,), "int32", data=mult)
        S = T.decl_buffer((O,), "int32", data=shift)
        Y = T.decl_buffer((OH * OW * O,), "int8", data=y)
        if not g["reads_x"]:  # every window lies in the padding: y depends on the bias only
            T.evaluate(T.call_extern("int32", "(void)", x))
        TS = T.alloc_buffer((1 << bits,), "int32")
        WD = T.alloc_buffer((K if decoded else 1,), "int16")
        acc = T.alloc_buffer((1,), "int32")
        rq = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((1,), "int64")
        if not decoded:  # the row buffer is a placeholder then
            T.evaluate(T.call_extern("int32", "(void)", WD.data))
        if G == 1:
            fill(TS, CBk, 0)
        for oc in range(O):
            if G > 1:
                fill(TS, CBk, oc)
            if decoded:
                for k in range(K):
                    WD[k] = T.Cast("int16", TS[code_at(Cb, oc * RB, k, bits, RB)])
            for oy, ox in T.grid(OH, OW):
                acc[0] = B[oc]
                for ky, kx in T.grid(KH, KW):
                    if padded:
                        if (0 <= oy * SH - PT + ky * DH < H) and (0 <= ox * SW - PL + kx * DW < W):
                            taps(X, Cb, TS, WD, acc, oc, oy, ox, ky, kx)
                    else:
                        taps(X, Cb, TS, WD, acc, oc, oy, ox, ky, kx)
                requantize_store32(Y, (oy * OW + ox) * O + oc, acc[0], M[oc], S[oc], rq, t, out_zp, lo, hi)

    return kernel
