"""ep_conv2d_expcb: NHWC convolution with exponential-codebook weights (``--weights expN``), int32 bias,
per-channel requantization: bit-exact with reference.ops_exp.conv2d_expcb.

codes: (O, row_bytes) uint8, row o holding the K = KH*KW*I codes of output channel o in (KH, KW, I) order
(pack.expcodes); codebook: (G, 2^(b-1)) int16, G = O (per channel) or 1 (per layer), entry 0 the zero. The
weight of code c in channel o is sign(c) * codebook[g, c & (2^(b-1) - 1)], g = o or 0.

Output channel by output channel: a 2^b-entry signed table (TS) is built from the channel's codebook row
(once for a per-layer codebook), the channel's K codes are decoded through it into an int16 row on the stack
(WD, at most exp_common.SCRATCH_BYTES) together with zs = in_zp * sum WD. Then every output pixel:

* window inside the input (a static box of pixels): acc = bias + (sum x * WD - zs), a window row being one
  contiguous run of KW * C inputs (dilation 1 along the width), unrolled by UNROLL;
* window cut by the padding: acc = bias + sum (x - in_zp) * WD over the valid taps, whose bounds are computed
  once per pixel (exp_common.bounds_macro: no per-tap tests);

requantized with exp_common.requantize_store32. The partial sums stay in int32: |sum x * w| <= 128 sum |w|,
|zs| <= 128 sum |w|, their difference is sum (x - in_zp) w, and the packer's bound covers bias + that.
Nothing else is unrolled: the code stays close to conv2d_s8's. When the row does not fit the stack
(K > SCRATCH_BYTES / 2) each weight is decoded where it is used (``direct``, the clipped loop for every pixel).

The int32 accumulator cannot overflow: the packer proves |bias| + 255 * sum |w| < 2^31 per channel
(compress.quantize._exp_layer).
"""

from __future__ import annotations

from tvm.script import tirx as T

from .exp_common import (SCRATCH_BYTES, bounds_macro, check_codebook, code_at, requantize_store32, row_bytes,
                         signed_table_macro, unroll_factor, window_geometry)

PARAMS = ["x", "codes", "codebook", "bias", "mult", "shift", "y"]
CONST = {"x", "codes", "codebook", "bias", "mult", "shift"}
UNROLL = 4  # the whole-window runs are unrolled by the largest of 4, 2, 1 dividing them


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
    in_zp, out_zp = int(attrs["in_zp"]), int(attrs["out_zp"])
    lo, hi = attrs["act_min"], attrs["act_max"]
    decoded = plan(attrs, shapes)["path"] == "decoded"
    fill = signed_table_macro(bits, NC)
    bounds = bounds_macro(g)
    fused = DW == 1 or KW == 1  # a window row's valid taps are one contiguous run of the input
    # output pixels whose window lies inside the input: a static box [OYL, OYR) x [OXL, OXR)
    full_y = [o for o in range(OH) if o * SH - PT >= 0 and o * SH - PT + (KH - 1) * DH < H]
    full_x = [o for o in range(OW) if o * SW - PL >= 0 and o * SW - PL + (KW - 1) * DW < W]
    inner = decoded and bool(full_y) and bool(full_x)
    OYL, OYR = (full_y[0], full_y[-1] + 1) if full_y else (0, 0)
    OXL, OXR = (full_x[0], full_x[-1] + 1) if full_x else (0, 0)
    every = inner and (OYL, OYR, OXL, OXR) == (0, OH, 0, OW)  # no padding cuts any window
    RUN = KW * C if fused else C
    U = unroll_factor(RUN, UNROLL)

    def weight(Cb, TS, WD, oc, k):  # TIR expression: the int32 weight k of channel oc
        return T.Cast("int32", WD[k]) if decoded else TS[code_at(Cb, oc * RB, k, bits, RB)]

    def xin(X, oy, ox, ky, kx, j):  # TIR expression: input element j of the run at tap (ky, kx)
        return T.Cast("int32", X[((oy * SH - PT + ky * DH) * W + ox * SW - PL + kx * DW) * C + j])

    @T.macro
    def clipped(X, Cb, TS, WD, B, acc, bd, oc, oy, ox):
        """acc = bias + sum (x - in_zp) * w over the valid taps bd of the pixel's window."""
        acc[0] = B[oc]
        for ky in T.serial(bd[0], bd[1]):
            if fused:
                for j in T.serial(bd[2] * C, bd[3] * C):
                    acc[0] = acc[0] + (xin(X, oy, ox, ky, 0, j) - in_zp) * weight(Cb, TS, WD, oc, ky * KW * C + j)
            else:
                for kx in T.serial(bd[2], bd[3]):
                    for ic in range(C):
                        acc[0] = acc[0] + (xin(X, oy, ox, ky, kx, ic) - in_zp) * weight(
                            Cb, TS, WD, oc, (ky * KW + kx) * C + ic)

    @T.macro
    def whole(X, WD, B, acc, zs, oc, oy, ox):
        """acc = bias + (sum x * w - in_zp * sum w) over the whole window: runs of RUN inputs, unrolled by U."""
        acc[0] = 0
        for ky in range(KH):
            for kx in range(1 if fused else KW):
                for jo in range(RUN // U):
                    for u in T.unroll(U):
                        acc[0] = acc[0] + xin(X, oy, ox, ky, kx, jo * U + u) * T.Cast(
                            "int32", WD[(ky * KW + kx) * C + jo * U + u])
        acc[0] = B[oc] + (acc[0] - zs[0])

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
        zs = T.alloc_buffer((1,), "int32")
        bd = T.alloc_buffer((4,), "int32")
        rq = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((1,), "int64")
        if not decoded:  # the row buffer and its zero-point sum are placeholders then
            T.evaluate(T.call_extern("int32", "(void)", WD.data))
            T.evaluate(T.call_extern("int32", "(void)", zs.data))
        if every:  # so are the tap bounds
            T.evaluate(T.call_extern("int32", "(void)", bd.data))
        if G == 1:
            fill(TS, CBk, 0)
        for oc in range(O):
            if G > 1:
                fill(TS, CBk, oc)
            if decoded:
                zs[0] = 0
                for k in range(K):
                    WD[k] = T.Cast("int16", TS[code_at(Cb, oc * RB, k, bits, RB)])
                    zs[0] = zs[0] + T.Cast("int32", WD[k])
                zs[0] = zs[0] * in_zp
            for oy, ox in T.grid(OH, OW):
                if every:
                    whole(X, WD, B, acc, zs, oc, oy, ox)
                elif inner:
                    if OYL <= oy and oy < OYR and OXL <= ox and ox < OXR:
                        whole(X, WD, B, acc, zs, oc, oy, ox)
                    else:
                        bounds(bd, oy, ox)
                        clipped(X, Cb, TS, WD, B, acc, bd, oc, oy, ox)
                else:
                    bounds(bd, oy, ox)
                    clipped(X, Cb, TS, WD, B, acc, bd, oc, oy, ox)
                requantize_store32(Y, (oy * OW + ox) * O + oc, acc[0], M[oc], S[oc], rq, t, out_zp, lo, hi)

    return kernel
