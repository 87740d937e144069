"""ep_conv2d_s8_smlad: int8 NHWC convolution for cores with the DSP extension, as an int16 im2col GEMM whose
inner block is the SMLAD micro-kernel (intrin_dsp.py) placed by a TVM schedule.

What it computes (the template, block form):

    im2col  for each pair q of output pixels p = 2q + i (the last pixel repeated when P is odd):
            Col[g, i, 2r + l] = x(p, k = 4g + 2l + r) - in_zp, 0 for taps in the padding and for k >= K
            (k = (ky * KW + kx) * C + c, the OHWI weight order; K4 = K rounded up to 4, G = K4 / 4 groups;
            the group's two words hold the elements 0, 2 and 1, 3: the lanes SXTAB16 and SXTAB16 ROR #8 give)
    mac     Acc[p, o] = sum over g, r, l of Col[g, i, 2r + l] * Wb[o // NOB, g, o % NOB, 2l + r]  (= sum_k (x - zp) w)
    out     y[p, o] = clamp(requantize32(Acc[p, o] + bias[o], mult[o], shift[o]) + out_zp, act_min, act_max)

Wb is the weight matrix (O, K), zero-padded to (O, K4) and stored in blocks of NOB channels by the lowering
(Wb[ob, g, j, :] = the 4 weights of group g of channel ob * NOB + j: one LDRD reads two channels' words), which
also doubles the bias for the SMMULR requantization (common.requantize32_store); the accumulator and requantization
bounds are proven there (codegen/lower.py), else the layer keeps the plain kernel. The zero points and the
activation range are read at run time from the layer's ``qp`` array (common.layer_params), so layers of the
same shapes share one kernel. Col lives in the arena
(``scratch``: G x 2 x 4 int16, planned by memplan), the two pixel columns interleaved per group so that one
LDRD reads a pixel's group.

The schedule (``schedule``) splits the channels into blocks of NOB (2 for pixel pairs, up to 5 for a single
pixel; a divisor of O, down to 1), moves the reduction over groups outside the block, computes the requantization of
each block right after it (reverse_compute_at, unrolled, so the accumulators stay in registers), decomposes
the reduction's initialisation, tensorizes the pixels x channels x group block with the SMLAD micro-kernel
and unrolls the reduction loop by 2. The im2col is copied 4 bytes at a time (SXTAB16) when C is a multiple of 4, element by
element otherwise.
"""

from __future__ import annotations

from tvm.script import tirx as T

from ..lower import double_bias, pad_rows, prove
from .common import QP_IN_ZP, QP_INPUT_WORD, QP_MAX, QP_MIN, QP_OUT_ZP, layer_params, requantize32_store, right_shift
from .intrin_dsp import smlad_intrin

PARAMS = ["x", "w", "bias", "mult", "shift", "y", "qp", "scratch"]
CONST = {"x", "w", "bias", "mult", "shift", "qp"}
UNROLL_GROUPS = 4  # im2col: a tap's channel groups are copied unrolled up to this many
UNROLL = 2  # reduction groups per trip of the GEMM loop (where G is a multiple)


def geometry(attrs, shapes) -> dict:
    _, H, W, C = shapes["x"]
    O, KH, KW, _ = shapes["w"]
    _, OH, OW, _ = shapes["y"]
    K = KH * KW * C
    K4 = -(-K // 4) * 4
    P = OH * OW
    NPB = 2 if P >= 2 else 1
    # channels per block: 2 with pixel pairs (13 registers), up to 5 for one pixel (its column loaded once
    # per block); a divisor of O, so no tail
    nob = next(b for b in ((2,) if NPB == 2 else (5, 4, 3, 2)) + (1,) if O % b == 0)
    return dict(H=H, W=W, C=C, O=O, KH=KH, KW=KW, OH=OH, OW=OW, P=P, K=K, K4=K4, G=K4 // 4, NPB=NPB,
                NQ=-(-P // NPB), NOB=nob)


def scratch_bytes(attrs, shapes) -> int:
    g = geometry(attrs, shapes)
    return g["G"] * g["NPB"] * 4 * 2


def lower(attrs, shapes, consts):
    """(attrs, lowered constants) for this kernel, or (None, reason) when its bounds do not hold."""
    w = consts["w"]
    w2 = w.reshape(w.shape[0], -1)
    rq, why = prove(consts["bias"], w2, consts["mult"], consts["shift"])
    if rq is None:
        return None, why
    g = geometry(attrs, shapes)
    nob, G = g["NOB"], g["G"]
    new = {"w": pad_rows(w2).reshape(-1, nob, G, 4).transpose(0, 2, 1, 3).copy()}
    if not rq.left:
        new["bias"] = double_bias(consts["bias"])
    if rq.changed:
        new.update(mult=rq.mult, shift=rq.shift)
    a, new["qp"] = layer_params(dict(attrs, requant_left=rq.left), _nzp2(attrs["in_zp"]))
    return a, new


def _nzp2(zp: int) -> int:
    """-zp in both 16-bit lanes, as an int32 (the SXTAB16 addend)."""
    v = ((-int(zp)) & 0xFFFF) * 0x10001
    return v - (1 << 32) if v >= 1 << 31 else v


def template(attrs, shapes):
    g = geometry(attrs, shapes)
    H, W, C, O, KH, KW, OW, P = (g[k] for k in ("H", "W", "C", "O", "KH", "KW", "OW", "P"))
    K, K4, G, NPB, NQ, NOB = (g[k] for k in ("K", "K4", "G", "NPB", "NQ", "NOB"))
    (SH, SW), (PT, PL, _, _), (DH, DW) = attrs["strides"], attrs["pads"], attrs["dilations"]
    full = bool(attrs["act_full"])
    left = bool(attrs.get("requant_left", True))
    padded = any(attrs["pads"])
    C4 = C // 4
    ragged = P % NPB != 0  # the last pair repeats the last pixel

    @T.macro
    def put(Col, gi, i, v0, v1):
        T.evaluate(T.call_extern("void", "ep_st32a", T.address_of(Col[gi, i, 0]), v0))
        T.evaluate(T.call_extern("void", "ep_st32a", T.address_of(Col[gi, i, 2]), v1))

    @T.macro
    def copy_group(X, Col, QP, src, gi, i):
        v: T.let[T.int32] = T.call_extern("int32", "ep_ld32", T.address_of(X[src]))
        put(Col, gi, i, T.call_extern("int32", "ep_sxtab16", QP[QP_INPUT_WORD], v),
            T.call_extern("int32", "ep_sxtab16_ror8", QP[QP_INPUT_WORD], v))

    @T.macro
    def copy_tap(X, Col, QP, iy, ix, ky, kx, i):
        if C4 <= UNROLL_GROUPS:
            for cg in T.unroll(C4):
                copy_group(X, Col, QP, (iy * W + ix) * C + cg * 4, (ky * KW + kx) * C4 + cg, i)
        else:
            for cg in range(C4):
                copy_group(X, Col, QP, (iy * W + ix) * C + cg * 4, (ky * KW + kx) * C4 + cg, i)

    @T.macro
    def zero_taps(Col, g0, n, i):
        for cg in range(n):
            put(Col, g0 + cg, i, T.int32(0), T.int32(0))

    @T.macro
    def im2col_words(X, Col, QP, iy0, ix0, i):
        # C % 4 == 0: every group lies in one tap; the padding test is per tap (one zero path: less code)
        for ky, kx in T.grid(KH, KW):
            if padded:
                if (0 <= iy0 + ky * DH < H) and (0 <= ix0 + kx * DW < W):
                    copy_tap(X, Col, QP, iy0 + ky * DH, ix0 + kx * DW, ky, kx, i)
                else:
                    zero_taps(Col, (ky * KW + kx) * C4, C4, i)
            else:
                copy_tap(X, Col, QP, iy0 + ky * DH, ix0 + kx * DW, ky, kx, i)

    @T.macro
    def im2col_elems(X, Col, QP, iy0, ix0, i):
        # element by element: k = (ky * KW + kx) * C + c goes to group k // 4, lane slot 2 (k % 2) + (k % 4) // 2
        for ky, kx, c in T.grid(KH, KW, C):
            if padded:
                if (0 <= iy0 + ky * DH < H) and (0 <= ix0 + kx * DW < W):
                    Col[((ky * KW + kx) * C + c) // 4, i, ((ky * KW + kx) * C + c) % 2 * 2
                        + ((ky * KW + kx) * C + c) % 4 // 2] = \
                        T.Cast("int16", X[((iy0 + ky * DH) * W + ix0 + kx * DW) * C + c]) - T.Cast("int16", QP[QP_IN_ZP])
                else:
                    Col[((ky * KW + kx) * C + c) // 4, i, ((ky * KW + kx) * C + c) % 2 * 2
                        + ((ky * KW + kx) * C + c) % 4 // 2] = T.int16(0)
            else:
                Col[((ky * KW + kx) * C + c) // 4, i, ((ky * KW + kx) * C + c) % 2 * 2
                    + ((ky * KW + kx) * C + c) % 4 // 2] = \
                    T.Cast("int16", X[((iy0 + ky * DH) * W + ix0 + kx * DW) * C + c]) - T.Cast("int16", QP[QP_IN_ZP])
        for k in range(K, K4):
            Col[k // 4, i, k % 2 * 2 + k % 4 // 2] = T.int16(0)

    @T.macro
    def im2col(X, Col, QP, p, i):
        if C % 4 == 0:
            im2col_words(X, Col, QP, p // OW * SH - PT, p % OW * SW - PL, i)
        else:
            im2col_elems(X, Col, QP, p // OW * SH - PT, p % OW * SW - PL, i)

    @T.prim_func(s_tir=True)
    def kernel(x: T.handle("int8"), w: T.handle("int8"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8"), qp: T.handle("int32"), scratch: T.handle("int16")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Wt = T.decl_buffer((O // NOB, G, NOB, 4), "int8", data=w)
        B = T.decl_buffer((O,), "int32", data=bias)
        M = T.decl_buffer((O,), "int32", data=mult)
        S = T.decl_buffer((O,), "int32", data=shift)
        Y = T.decl_buffer((NQ * NPB * O,), "int8", data=y)
        QP = T.decl_buffer((5,), "int32", data=qp)
        Col = T.decl_buffer((G, NPB, 4), "int16", data=scratch)
        with T.sblock("root"):
            Acc = T.sblock_alloc_buffer((NQ * NPB, O), "int32")
            for q in range(NQ):
                with T.sblock("im2col"):
                    vq = T.axis.spatial(NQ, q)
                    T.reads(X[0:H * W * C], QP[0:5])
                    T.writes(Col[0:G, 0:NPB, 0:4])
                    for i in range(NPB):
                        im2col(X, Col, QP, T.min(vq * NPB + i, P - 1) if ragged else vq * NPB + i, i)
                for i, o, gg, r, l in T.grid(NPB, O, G, 2, 2):
                    with T.sblock("mac"):
                        vq = T.axis.spatial(NQ, q)
                        vi, vo, vg, vr, vl = T.axis.remap("SSRRR", [i, o, gg, r, l])
                        with T.init():
                            Acc[vq * NPB + vi, vo] = 0
                        Acc[vq * NPB + vi, vo] = Acc[vq * NPB + vi, vo] + T.Cast("int32", Col[vg, vi, vr * 2 + vl]) \
                            * T.Cast("int32", Wt[vo // NOB, vg, vo % NOB, vl * 2 + vr])
            for q, o in T.grid(NQ, O):
                with T.sblock("out"):  # channel o of pixel pair q: the channel's constants once
                    vq, vo = T.axis.remap("SS", [q, o])
                    T.reads(Acc[vq * NPB:vq * NPB + NPB, vo], B[vo], M[vo], S[vo], QP[0:5])
                    T.writes(Y[vq * NPB * O + vo:(vq * NPB + NPB - 1) * O + vo + 1])
                    b: T.let[T.int32] = B[vo]
                    m: T.let[T.int32] = M[vo]
                    e: T.let[T.int32] = right_shift(S[vo], left)
                    h: T.let[T.int32] = T.shift_left(T.int32(1), e)
                    for i in T.unroll(NPB):
                        if ragged:
                            if vq * NPB + i < P:
                                requantize32_store(Y, (vq * NPB + i) * O + vo, Acc[vq * NPB + i, vo], b, m, S[vo], h,
                                                   e, left, QP[QP_OUT_ZP], QP[QP_MIN], QP[QP_MAX], full)()
                        else:
                            requantize32_store(Y, (vq * NPB + i) * O + vo, Acc[vq * NPB + i, vo], b, m, S[vo], h, e,
                                               left, QP[QP_OUT_ZP], QP[QP_MIN], QP[QP_MAX], full)()

    return kernel


def schedule(sch, attrs, shapes):
    """Tensorize the GEMM onto SMLAD micro-kernels (see the module docstring)."""
    g = geometry(attrs, shapes)
    mac, out = sch.get_sblock("mac"), sch.get_sblock("out")
    q, i, o, gg, r, l = sch.get_loops(mac)
    o0, o1 = sch.split(o, [None, g["NOB"]])
    sch.reorder(o0, gg, i, o1, r, l)
    sch.reverse_compute_at(out, o0)
    for lp in sch.get_loops(out)[2:]:  # below q, o0: the block's channels
        sch.unroll(lp)
    sch.decompose_reduction(mac, gg)
    sch.tensorize(i, smlad_intrin(g["NPB"], g["NOB"]))
    if g["G"] % UNROLL == 0 and g["G"] > UNROLL:  # two groups per trip: 35 instead of 38 instructions per
        _, gi = sch.split(gg, [None, UNROLL])      # 32 MACs (2 x 2 block, arm-none-eabi-gcc 12)
        sch.unroll(gi)
    return sch
