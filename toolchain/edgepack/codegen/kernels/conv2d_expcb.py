"""ep_conv2d_expcb: NHWC convolution with exponential-codebook weights (``--weights expN``), int32 bias,
per-channel requantization: bit-exact with reference.ops_exp.conv2d_expcb.

codes: (O, row_bytes) uint8, row o holding the K = KH*KW*I codes of output channel o in (KH, KW, I) order
(pack.expcodes); codebook: (G, 2^(b-1)) int16, G = O (per channel) or 1 (per layer), entry 0 the zero. The
weight of code c in channel o is sign(c) * codebook[g, c & (2^(b-1) - 1)], g = o or 0.

Output channels one at a time, or two (``PAIRS`` / attribute ``expcb_pairs``: one input load serves both;
with an odd count the last pair starts at O - 2 and redoes one channel, so there is no tail code): a 2^b-entry
signed table (TS) per channel is built from
its codebook row (once for a per-layer codebook), the pair's K codes are decoded through it into an int16
array on the stack (WD, interleaved by channel, at most exp_common.SCRATCH_BYTES) together with
zs = in_zp * sum WD per channel. Then every output pixel:

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

from .exp_common import (code_rows, SCRATCH_BYTES, bounds_macro, check_codebook, code_at, requantize_store32,
                         signed_table_macro, unroll_factor, window_geometry)

PARAMS = ["x", "codes", "codebook", "bias", "mult", "shift", "y"]
CONST = {"x", "codes", "codebook", "bias", "mult", "shift"}
UNROLL = 4  # the whole-window runs are unrolled by the largest of 4, 2, 1 dividing them
# Channel pairs (attribute ``expcb_pairs`` overrides): one input load serves two channels, about 1/3 fewer
# instructions on Cortex-M7 for about 130 B more code per kernel (benchmarks/exp_mnist.py). Off by default:
# the format exists to save flash.
PAIRS = False


def plan(attrs, shapes) -> dict:
    """path "decoded" (rows decoded once into the stack, ``channels`` 2 or 1 at a time) or "direct" (each
    weight decoded at every use, one channel at a time)."""
    O, KH, KW, I = (int(v) for v in attrs["wshape"])
    K = KH * KW * I
    if 2 * K > SCRATCH_BYTES:
        return {"path": "direct", "K": K, "channels": 1}
    pairs = attrs.get("expcb_pairs", PAIRS)
    return {"path": "decoded", "K": K, "channels": 2 if pairs and O >= 2 and 4 * K <= SCRATCH_BYTES else 1}


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
    RB = code_rows("conv2d_expcb", shapes, O, K, bits)
    g = window_geometry("conv2d_expcb", attrs, H, W, KH, KW, OH, OW)
    SH, SW, PT, PL, DH, DW = g["SH"], g["SW"], g["PT"], g["PL"], g["DH"], g["DW"]
    in_zp, out_zp = int(attrs["in_zp"]), int(attrs["out_zp"])
    lo, hi = attrs["act_min"], attrs["act_max"]
    p = plan(attrs, shapes)
    decoded, CP = p["path"] == "decoded", p["channels"]
    NB = (O + CP - 1) // CP  # blocks of CP channels; the last one starts at O - CP (an odd O redoes a channel)
    NT = 1 << bits
    NTB = CP if G > 1 else 1  # signed tables: one per channel of the block, or one for the layer
    fills = [signed_table_macro(bits, NC, j * NT) for j in range(2)]
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

    def weight(Cb, TS, WD, o0, j, k):  # TIR expression: the int32 weight k of channel o0 + j
        return T.Cast("int32", WD[k * CP + j]) if decoded else TS[code_at(Cb, o0 * RB, k, bits, RB)]

    def xin(X, oy, ox, ky, kx, j):  # TIR expression: input element j of the run at tap (ky, kx)
        return T.Cast("int32", X[((oy * SH - PT + ky * DH) * W + ox * SW - PL + kx * DW) * C + j])

    @T.macro
    def mac(Cb, TS, WD, acc, xv, o0, k):
        for j in T.unroll(CP):
            acc[j] = acc[j] + xv[0] * weight(Cb, TS, WD, o0, j, k)

    @T.macro
    def clipped(X, Cb, TS, WD, B, acc, xv, bd, o0, oy, ox):
        """acc[j] = bias + sum (x - in_zp) * w over the valid taps bd of the pixel's window."""
        for j in T.unroll(CP):
            acc[j] = B[o0 + j]
        for ky in T.serial(bd[0], bd[1]):
            if fused:
                for e in T.serial(bd[2] * C, bd[3] * C):
                    xv[0] = xin(X, oy, ox, ky, 0, e) - in_zp
                    mac(Cb, TS, WD, acc, xv, o0, ky * KW * C + e)
            else:
                for kx in T.serial(bd[2], bd[3]):
                    for ic in range(C):
                        xv[0] = xin(X, oy, ox, ky, kx, ic) - in_zp
                        mac(Cb, TS, WD, acc, xv, o0, (ky * KW + kx) * C + ic)

    @T.macro
    def whole(X, Cb, TS, WD, B, acc, xv, zs, o0, oy, ox):
        """acc[j] = bias + (sum x * w - in_zp * sum w) over the whole window: runs of RUN inputs, unrolled by U."""
        for j in T.unroll(CP):
            acc[j] = 0
        for ky in range(KH):
            for kx in range(1 if fused else KW):
                for jo in range(RUN // U):
                    for u in T.unroll(U):
                        xv[0] = xin(X, oy, ox, ky, kx, jo * U + u)
                        mac(Cb, TS, WD, acc, xv, o0, (ky * KW + kx) * C + jo * U + u)
        for j in T.unroll(CP):
            acc[j] = B[o0 + j] + (acc[j] - zs[j])

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
        TS = T.alloc_buffer((NT * NTB,), "int32")
        WD = T.alloc_buffer((K * CP if decoded else 1,), "int16")
        acc = T.alloc_buffer((CP,), "int32")
        xv = T.alloc_buffer((1,), "int32")
        zs = T.alloc_buffer((CP,), "int32")
        bd = T.alloc_buffer((4,), "int32")
        ob = T.alloc_buffer((1,), "int32")
        rq = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((1,), "int64")
        if not decoded:  # the row buffer and its zero-point sums are placeholders then
            T.evaluate(T.call_extern("int32", "(void)", WD.data))
            T.evaluate(T.call_extern("int32", "(void)", zs.data))
        if every:  # so are the tap bounds
            T.evaluate(T.call_extern("int32", "(void)", bd.data))
        if G == 1:
            fills[0](TS, CBk, 0)
        for blk in range(NB):
            ob[0] = T.Select(blk * CP < O - CP, blk * CP, O - CP)
            if G > 1:
                fills[0](TS, CBk, ob[0])
                if CP == 2:
                    fills[1](TS, CBk, ob[0] + 1)
            if decoded:
                for j in T.unroll(CP):
                    zs[j] = 0
                for k in range(K):
                    for j in T.unroll(CP):
                        WD[k * CP + j] = T.Cast("int16", TS[(j * NT if G > 1 else 0)
                                                            + code_at(Cb, (ob[0] + j) * RB, k, bits, RB)])
                        zs[j] = zs[j] + T.Cast("int32", WD[k * CP + j])
                for j in T.unroll(CP):
                    zs[j] = zs[j] * in_zp
            for oy, ox in T.grid(OH, OW):
                if every:
                    whole(X, Cb, TS, WD, B, acc, xv, zs, ob[0], oy, ox)
                elif inner:
                    if OYL <= oy and oy < OYR and OXL <= ox and ox < OXR:
                        whole(X, Cb, TS, WD, B, acc, xv, zs, ob[0], oy, ox)
                    else:
                        bounds(bd, oy, ox)
                        clipped(X, Cb, TS, WD, B, acc, xv, bd, ob[0], oy, ox)
                else:
                    bounds(bd, oy, ox)
                    clipped(X, Cb, TS, WD, B, acc, xv, bd, ob[0], oy, ox)
                for j in range(CP):  # a loop: the requantization is the kernel's largest piece of code
                    requantize_store32(Y, (oy * OW + ox) * O + ob[0] + j, acc[j], M[ob[0] + j], S[ob[0] + j], rq, t,
                                       out_zp, lo, hi)

    return kernel
