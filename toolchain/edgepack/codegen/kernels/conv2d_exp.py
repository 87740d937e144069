"""ep_conv2d_exp: NHWC convolution with exponent-coded weights (``--weights expN``), int32 bias, per-channel
requantization: bit-exact with reference.ops_exp.conv2d_exp.

codes: (O, row_bytes) uint8, row o holding the K = KH*KW*I codes of output channel o in (KH, KW, I) order
(pack.expcodes). Attributes: bits, top, wshape (O, KH, KW, I) and those of conv2d_s8.

Output channels go in blocks. At the start of a block its weights are decoded once (through the 2^b-entry
table, a tap's codes read in byte-aligned groups: two per byte for 4 bits) into a stack array
(exp_common.SCRATCH_BYTES) laid out tap-major, so the innermost loop walks one input run and the array
together; the per-tap weight sums go into a small prefix-sum table for the zero point:
acc = bias + 2^f * (sum x * w' - zp * sum of w' over the valid taps) (see exp_common). Every output pixel
then has the window's valid taps as loop bounds (no per-tap tests); with dilation 1 along the width a window
row is one contiguous run of (taps * I) inputs, unrolled by UNROLL. Where the window is whole horizontally
(a static range of columns) two neighbouring output pixels go together, so each weight load serves both.
Requantization: exp_common.requantize_store32 (the reference arithmetic in 32-bit steps).

Strategies (attribute ``exp_strategy``, default the module's STRATEGY; attribute ``exp_pairs`` false turns the
packed pairs off, for measurements):

* ``mul``, decode then multiply (the default: benchmarks/exp_conv.py). When every |w'| <= 64 (exp2..exp4, or
  exp5/exp6 with a small top) two output channels share one 32-bit word w'_a + 2^24 * w'_b and one
  32x32->64 multiply-accumulate (SMLAL on Cortex-M) does both products: |sum x * w'_a| stays below 2^23
  over the split span (the whole window, or one window row, static), so the low 24 bits of the 64-bit sum,
  sign-extended, are the first channel's sum and the rest the second's. Otherwise one int32
  multiply-accumulate per product (MLA), up to four channels per block.
* ``shift``, shift and add: each weight is a descriptor (shift s and sign; -1 for the zero code, skipped)
  and x * 2^s is added or subtracted; one pixel at a time.

When not even one channel's decoded weights fit the stack budget (K above ~1200) the kernel decodes each
weight where it uses it (``direct``: correct, several times slower).
"""

from __future__ import annotations

from tvm.script import tirx as T

from .exp_common import (code_rows, SCRATCH_BYTES, bounds_macro, check_exp_attrs, code_at, factor, group, requantize_store32,
                         shift_table_macro, static_code, table_macro, unroll_factor, window_geometry)

PARAMS = ["x", "codes", "bias", "mult", "shift", "y"]
CONST = {"x", "codes", "bias", "mult", "shift"}

STRATEGY = "mul"  # "mul" (decode then multiply) or "shift" (shift and add); attribute exp_strategy overrides
MAX_PAIRS = 2  # channel pairs per block in the packed-pair path (two 64-bit accumulators each)
MAX_CHANNELS = 4  # channels per block in the mla and shift paths
UNROLL = 16  # inner loop unrolling (a divisor of the input channels)
L23 = (1 << 23) - 1


def plan(attrs, shapes) -> dict:
    """The kernel's static choices: path ("pair", "mla", "shift", "direct"), channels per block, split."""
    _, H, W, C = shapes["x"]
    O, KH, KW, I = (int(v) for v in attrs["wshape"])
    if I != C:
        raise ValueError(f"conv2d_exp: weights have {I} input channels, input has {C}")
    bits, top = check_exp_attrs("conv2d_exp", attrs)
    f, maxe = factor(bits, top)
    K, KT = KH * KW * C, KH * KW
    strategy = attrs.get("exp_strategy", STRATEGY)
    if strategy not in ("mul", "shift"):
        raise ValueError(f"conv2d_exp: exp_strategy must be 'mul' or 'shift', got {strategy!r}")

    def fits(ch, words):  # decoded words + tap sums + zero-point prefix sums for ch channels
        return 4 * (words + ch * KT + ch * (KH + 1) * (KW + 1)) <= SCRATCH_BYTES

    p = dict(bits=bits, top=top, f=f, maxe=maxe, K=K, KT=KT, strategy=strategy, split=None)
    if strategy == "mul" and maxe <= 6 and attrs.get("exp_pairs", True):
        if 128 * K * (1 << maxe) <= L23:
            p["split"] = "window"
        elif 128 * KW * C * (1 << maxe) <= L23:
            p["split"] = "row"
        npairs = min(MAX_PAIRS, (O + 1) // 2)
        while npairs and not fits(2 * npairs, K * npairs):
            npairs -= 1
        if p["split"] and npairs:
            return dict(p, path="pair", pairs=npairs, channels=2 * npairs)
        p["split"] = None
    r = min(MAX_CHANNELS, O)
    while r and not fits(r, K * r):
        r -= 1
    if r:
        return dict(p, path="shift" if strategy == "shift" else "mla", channels=r)
    return dict(p, path="direct", channels=1)


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    O, KH, KW, _ = (int(v) for v in attrs["wshape"])
    _, OH, OW, OY = shapes["y"]
    if OY != O:
        raise ValueError(f"conv2d_exp: y has {OY} channels, weights {O}")
    p = plan(attrs, shapes)
    bits, top, f, K, KT = p["bits"], p["top"], p["f"], p["K"], p["KT"]
    RB = code_rows("conv2d_exp", shapes, O, K, bits)
    g = window_geometry("conv2d_exp", attrs, H, W, KH, KW, OH, OW)
    SH, SW, PT, PL, DH, DW = g["SH"], g["SW"], g["PT"], g["PL"], g["DH"], g["DW"]
    clip_v, clip_h = g["clip_v"], g["clip_h"]
    in_zp, out_zp = int(attrs["in_zp"]), int(attrs["out_zp"])
    lo, hi = attrs["act_min"], attrs["act_max"]
    NT = 1 << bits
    if p["path"] == "direct":
        return _direct(attrs, g, p, H, W, C, O, KH, KW, OH, OW, RB)

    path, CH = p["path"], p["channels"]
    NP = p.get("pairs", 1)
    NB = (O + CH - 1) // CH
    tail = O % CH != 0
    U = unroll_factor(C, UNROLL)
    CU = C // U
    fused = DW == 1 or KW == 1  # a window row's valid taps are one contiguous run of the input
    split_row = p["split"] == "row"
    P1 = (KH + 1) * (KW + 1)
    WBN = K * NP if path == "pair" else K * CH  # int32 words of decoded weights in SCR
    fill_w = table_macro(bits, top, f)
    fill_w24 = table_macro(bits, top, f, 1 << 24)
    fill_d = shift_table_macro(bits, top, f)
    scale_f = 1 << f
    # Output columns whose window is whole horizontally form one static range [OXL, OXR); there two
    # neighbouring pixels go together (PX = 2: every weight load serves both), elsewhere one at a time.
    full_x = [ox for ox in range(OW) if ox * SW - PL >= 0 and ox * SW - PL + (KW - 1) * DW < W]
    OXL, OXR = (full_x[0], full_x[-1] + 1) if full_x else (0, 0)
    PX = 1 if path == "shift" else 2
    NPX = (OXR - OXL) // PX if PX == 2 else 0  # pixel pairs per output row
    NSX = OW - PX * NPX  # single pixels per output row: [0, OXL) and [OXL + 2 * NPX, OW)

    # buffer layout: tables TB = [w' | w' * 2^24 or descriptor]; scratch SCR = [decoded block | tap sums |
    # zp prefix sums]; scalars sc = [2 x, descriptor, term, low 24 bits, 4 tap sums, 2 codes, 4 window bounds];
    # int64 t = [requantization temp | pair accumulators of pixel 0 | of pixel 1]; acc: [pixel 0 | pixel 1];
    # rq: 4 int32 requantization temps
    NTAB = 1 if path == "mla" else 2
    TSO, PZO = WBN, WBN + CH * KT  # scratch offsets
    XV, DV, TQ, SL, S0, CA, CB, BD = 0, 2, 3, 4, 5, 9, 10, 11  # scalar slots
    A64 = 1

    # decoding walks a tap's C codes in byte-aligned groups of G codes when C allows (static places)
    G, GB = group(bits)
    if C % G:
        G, GB = 1, 0

    def code(Cb, oc, tap, ig, jj):
        """Channel oc's code of kernel element tap * C + ig * G + jj (0 for the padding channels)."""
        if GB:
            c = static_code(Cb, oc * RB + (tap * C + ig * G) * bits // 8, jj, bits)
        else:
            c = code_at(Cb, oc * RB, tap * C + ig, bits, RB)
        return T.if_then_else(oc < O, c, 0) if tail else c

    @T.macro
    def decode(Cb, TB, SCR, sc, blk):
        if path == "pair":
            for tap in range(KT):
                for j in T.unroll(CH):
                    sc[S0 + j] = 0
                for ig in range(C // G):
                    for jj in T.unroll(G):
                        for pp in T.unroll(NP):
                            sc[CA] = code(Cb, blk * CH + 2 * pp, tap, ig, jj)
                            sc[CB] = code(Cb, blk * CH + 2 * pp + 1, tap, ig, jj)
                            SCR[(tap * C + ig * G + jj) * NP + pp] = TB[sc[CA]] + TB[NT + sc[CB]]
                            sc[S0 + 2 * pp] = sc[S0 + 2 * pp] + TB[sc[CA]]
                            sc[S0 + 2 * pp + 1] = sc[S0 + 2 * pp + 1] + TB[sc[CB]]
                for j in T.unroll(CH):
                    SCR[TSO + j * KT + tap] = sc[S0 + j]
        else:
            for j in range(CH):
                for tap in range(KT):
                    sc[S0] = 0
                    for ig in range(C // G):
                        for jj in T.unroll(G):
                            sc[CA] = code(Cb, blk * CH + j, tap, ig, jj)
                            if path == "shift":
                                SCR[(tap * C + ig * G + jj) * CH + j] = TB[NT + sc[CA]]
                            else:
                                SCR[(tap * C + ig * G + jj) * CH + j] = TB[sc[CA]]
                            sc[S0] = sc[S0] + TB[sc[CA]]
                    SCR[TSO + j * KT + tap] = sc[S0]
        # PZ[j, yb, xb] = in_zp * (sum of the tap sums of channel j over ky < yb, kx < xb)
        for j in range(CH):
            for yb, xb in T.grid(KH + 1, KW + 1):
                sc[S0] = 0
                for ky, kx in T.grid(yb, xb):
                    sc[S0] = sc[S0] + SCR[TSO + j * KT + ky * KW + kx]
                SCR[PZO + j * P1 + yb * (KW + 1) + xb] = sc[S0] * in_zp

    @T.macro
    def mac(X, SCR, t, acc, sc, xi, k, npx):
        """The products of input elements X[xi] (and X[xi + SW * C], the next pixel's) with the block's
        weights of kernel element k."""
        for q in T.unroll(npx):
            sc[XV + q] = T.Cast("int32", X[xi + q * (SW * C)])
        if path == "pair":
            for pp in T.unroll(NP):
                for q in T.unroll(npx):
                    t[A64 + q * NP + pp] = t[A64 + q * NP + pp] \
                        + T.Cast("int64", sc[XV + q]) * T.Cast("int64", SCR[k * NP + pp])
        elif path == "mla":
            for j in T.unroll(CH):
                for q in T.unroll(npx):
                    acc[q * CH + j] = acc[q * CH + j] + sc[XV + q] * SCR[k * CH + j]
        else:
            for j in T.unroll(CH):
                sc[DV] = SCR[k * CH + j]
                if sc[DV] >= 0:
                    sc[TQ] = sc[XV] * T.shift_left(1, sc[DV] & 31)
                    acc[j] = T.Select((sc[DV] & 256) != 0, acc[j] - sc[TQ], acc[j] + sc[TQ])

    @T.macro
    def split(t, acc, sc, npx):
        """acc[2p] += low 24 bits of pair accumulator p (signed), acc[2p+1] += the rest; clear it."""
        for q in T.unroll(npx):
            for pp in T.unroll(NP):
                sc[SL] = T.shift_right(T.Cast("int32", T.shift_left(T.Cast("uint32", t[A64 + q * NP + pp]),
                                                                    T.uint32(8))), 8)
                acc[q * CH + 2 * pp] = acc[q * CH + 2 * pp] + sc[SL]
                acc[q * CH + 2 * pp + 1] = acc[q * CH + 2 * pp + 1] + T.Cast(
                    "int32", T.shift_right(t[A64 + q * NP + pp] - T.Cast("int64", sc[SL]), T.int64(24)))
                t[A64 + q * NP + pp] = T.int64(0)

    def corr(SCR, sc, j, whole_x):
        """in_zp * (sum of channel j's weights over the pixel's valid taps)."""
        z = PZO + j * P1
        if not clip_v and (whole_x or not clip_h):
            return SCR[z + KH * (KW + 1) + KW]
        if whole_x:
            return SCR[z + sc[BD + 1] * (KW + 1) + KW] - SCR[z + sc[BD] * (KW + 1) + KW] \
                - SCR[z + sc[BD + 1] * (KW + 1)] + SCR[z + sc[BD] * (KW + 1)]
        return (SCR[z + sc[BD + 1] * (KW + 1) + sc[BD + 3]] - SCR[z + sc[BD] * (KW + 1) + sc[BD + 3]]
                - SCR[z + sc[BD + 1] * (KW + 1) + sc[BD + 2]] + SCR[z + sc[BD] * (KW + 1) + sc[BD + 2]])

    def total(B, SCR, acc, sc, oc, j, q, whole_x):
        s = acc[q * CH + j] - corr(SCR, sc, j, whole_x)
        return B[oc] + (s * scale_f if scale_f != 1 else s)

    @T.macro
    def pixels(X, B, M, S, Y, SCR, t, acc, sc, rq, blk, oy, ox, npx, whole_x):
        """Output pixels (oy, ox .. ox + npx - 1) of channel block blk; whole_x: their windows are whole
        horizontally (static taps 0 .. KW), else the bounds are sc[BD + 2], sc[BD + 3]."""
        if path == "pair":
            for q in T.unroll(npx):
                for pp in T.unroll(NP):
                    t[A64 + q * NP + pp] = T.int64(0)
        for j in T.unroll(npx * CH):
            acc[j] = 0
        for ky in T.serial(sc[BD], sc[BD + 1]):
            if fused:
                if whole_x:
                    for io in range(KW * CU):
                        for u in T.unroll(U):
                            mac(X, SCR, t, acc, sc, ((oy * SH - PT + ky * DH) * W + ox * SW - PL) * C + io * U + u,
                                ky * (KW * C) + io * U + u, npx)
                else:
                    for io in T.serial(sc[BD + 2] * CU, sc[BD + 3] * CU):
                        for u in T.unroll(U):
                            mac(X, SCR, t, acc, sc, ((oy * SH - PT + ky * DH) * W + ox * SW - PL) * C + io * U + u,
                                ky * (KW * C) + io * U + u, npx)
            else:
                for kx in T.serial(0 if whole_x else sc[BD + 2], KW if whole_x else sc[BD + 3]):
                    for io in range(CU):
                        for u in T.unroll(U):
                            mac(X, SCR, t, acc, sc,
                                ((oy * SH - PT + ky * DH) * W + ox * SW - PL + kx * DW) * C + io * U + u,
                                (ky * KW + kx) * C + io * U + u, npx)
            if path == "pair" and split_row:
                split(t, acc, sc, npx)
        if path == "pair" and not split_row:
            split(t, acc, sc, npx)
        for q in T.unroll(npx):
            for j in T.unroll(CH):
                if tail:
                    if blk * CH + j < O:
                        requantize_store32(Y, (oy * OW + ox + q) * O + blk * CH + j,
                                           total(B, SCR, acc, sc, blk * CH + j, j, q, whole_x), M[blk * CH + j],
                                           S[blk * CH + j], rq, t, out_zp, lo, hi)
                else:
                    requantize_store32(Y, (oy * OW + ox + q) * O + blk * CH + j,
                                       total(B, SCR, acc, sc, blk * CH + j, j, q, whole_x), M[blk * CH + j],
                                       S[blk * CH + j], rq, t, out_zp, lo, hi)

    bounds = bounds_macro(g, BD)

    @T.macro
    def blocks(X, Cb, B, M, S, Y, TB, SCR, acc, sc, rq, t):
        for blk in range(NB):
            decode(Cb, TB, SCR, sc, blk)
            for oy in range(OH):
                if NPX > 0:
                    bounds(sc, oy, OXL)
                    for pr in range(NPX):
                        pixels(X, B, M, S, Y, SCR, t, acc, sc, rq, blk, oy, OXL + 2 * pr, 2, True)
                if NSX > 0:
                    for e in range(NSX):
                        bounds(sc, oy, T.Select(e < OXL, e, e + PX * NPX))
                        pixels(X, B, M, S, Y, SCR, t, acc, sc, rq, blk, oy, T.Select(e < OXL, e, e + PX * NPX), 1,
                               False)

    @T.prim_func
    def kernel(x: T.handle("int8"), codes: T.handle("uint8"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Cb = T.decl_buffer((O * RB,), "uint8", data=codes)
        B = T.decl_buffer((O,), "int32", data=bias)
        M = T.decl_buffer((O,), "int32", data=mult)
        S = T.decl_buffer((O,), "int32", data=shift)
        Y = T.decl_buffer((OH * OW * O,), "int8", data=y)
        if not g["reads_x"]:  # every window lies in the padding: y depends on the bias only
            T.evaluate(T.call_extern("int32", "(void)", x))
        TB = T.alloc_buffer((NT * NTAB,), "int32")
        SCR = T.alloc_buffer((WBN + CH * KT + CH * P1,), "int32")
        acc = T.alloc_buffer((PX * CH,), "int32")
        sc = T.alloc_buffer((15,), "int32")
        rq = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((1 + PX * NP,), "int64")
        fill_w(TB, 0)
        if path == "pair":
            fill_w24(TB, NT)
        if path == "shift":
            fill_d(TB, NT)
        blocks(X, Cb, B, M, S, Y, TB, SCR, acc, sc, rq, t)

    return kernel


def _direct(attrs, g, p, H, W, C, O, KH, KW, OH, OW, RB):
    """Fallback when no decoded row fits the stack: each weight decoded where it is used (multiply)."""
    bits, top = p["bits"], p["top"]
    SH, SW, PT, PL, DH, DW = g["SH"], g["SW"], g["PT"], g["PL"], g["DH"], g["DW"]
    in_zp, out_zp = int(attrs["in_zp"]), int(attrs["out_zp"])
    lo, hi = attrs["act_min"], attrs["act_max"]
    fill_w = table_macro(bits, top, 0)
    bounds = bounds_macro(g)

    @T.prim_func
    def kernel(x: T.handle("int8"), codes: T.handle("uint8"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Cb = T.decl_buffer((O * RB,), "uint8", data=codes)
        B = T.decl_buffer((O,), "int32", data=bias)
        M = T.decl_buffer((O,), "int32", data=mult)
        S = T.decl_buffer((O,), "int32", data=shift)
        Y = T.decl_buffer((OH * OW * O,), "int8", data=y)
        if not g["reads_x"]:
            T.evaluate(T.call_extern("int32", "(void)", x))
        TW = T.alloc_buffer((1 << bits,), "int32")
        acc = T.alloc_buffer((1,), "int32")
        bd = T.alloc_buffer((4,), "int32")
        rq = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((1,), "int64")
        fill_w(TW, 0)
        for oy, ox in T.grid(OH, OW):
            bounds(bd, oy, ox)
            for oc in range(O):
                acc[0] = B[oc]
                for ky in T.serial(bd[0], bd[1]):
                    for kx in T.serial(bd[2], bd[3]):
                        for i in range(C):
                            acc[0] = acc[0] + (T.Cast("int32", X[((oy * SH - PT + ky * DH) * W + ox * SW - PL
                                                                   + kx * DW) * C + i]) - in_zp) \
                                * TW[code_at(Cb, oc * RB, (ky * KW + kx) * C + i, bits, RB)]
                requantize_store32(Y, (oy * OW + ox) * O + oc, acc[0], M[oc], S[oc], rq, t, out_zp, lo, hi)

    return kernel
