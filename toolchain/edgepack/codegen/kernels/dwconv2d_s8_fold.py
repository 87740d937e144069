"""ep_dwconv2d_s8_fold: int8 NHWC depthwise convolution with the input zero point folded into the bias, for
cores with the DSP extension (SMMULR / SSAT requantization); output channel c reads input channel c // DM.

What it computes (the template, block form):

    rows    for each output row oy, when the layer pads: the KH input rows it reads, padded left and right,
            in scratch: Rows[ky, ix + PL, c] = x[oy * SH - PT + ky * DH, ix, c], and in_zp wherever that lies
            in the padding (a row above or below the input, or the PL / PR columns)
    mac     Acc[oy, ox, o] = sum over ky, kx of Rows[ky, ox * SW + kx * DW, o // DM] * w[ky, kx, o]   (SMLABB)
    out     y[oy, ox, o] = clamp(requantize32(Acc + bias'[o], mult[o], shift[o]) + out_zp, act_min, act_max)

bias' = bias - in_zp * sum_taps w (codegen/lower.py fold_zero_point), doubled for the SMMULR requantization:
sum((x - zp) w) over the in-bounds taps is sum(x' w) - zp sum(w) over all taps when the padding holds x' = zp,
exactly. Without padding the rows are the input itself (no scratch). The zero points and activation range are
read at run time from the layer's ``qp`` array (common.layer_params), so layers of the same shapes share one
kernel. The accumulator and requantization
bounds are proven in the lowering, else the layer keeps the plain kernel.

The schedule computes each output's requantization right after its reduction (reverse_compute_at, the
accumulator a register), unrolls the taps (constant offsets: LDRSB, LDRSB, SMLABB per MAC) and decomposes the
reduction's initialisation.
"""

from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from ..lower import double_bias, fold_zero_point, prove
from .common import QP_IN_ZP, QP_INPUT_WORD, QP_MAX, QP_MIN, QP_OUT_ZP, layer_params, requantize32_store, right_shift

PARAMS = ["x", "w", "bias", "mult", "shift", "y", "qp", "scratch"]
CONST = {"x", "w", "bias", "mult", "shift", "qp"}


def geometry(attrs, shapes) -> dict:
    _, H, W, C = shapes["x"]
    KH, KW, CO = shapes["w"]
    _, OH, OW, _ = shapes["y"]
    (PT, PL, PB, PR) = attrs["pads"]
    padded = any(attrs["pads"])
    WP = W + PL + PR if padded else W
    return dict(H=H, W=W, C=C, KH=KH, KW=KW, CO=CO, OH=OH, OW=OW, DM=CO // C, padded=padded, WP=WP)


def scratch_bytes(attrs, shapes) -> int:
    g = geometry(attrs, shapes)
    return g["KH"] * g["WP"] * g["C"] if g["padded"] else 0


def lower(attrs, shapes, consts):
    """(attrs, lowered constants): the folded, doubled bias; or (None, reason) when the bounds do not hold."""
    w = consts["w"]
    kh, kw, co = w.shape
    w2 = np.asarray(w, np.int64).reshape(kh * kw, co).T  # (CO, taps)
    rq, why = prove(consts["bias"], w2, consts["mult"], consts["shift"])
    if rq is None:
        return None, why
    folded = fold_zero_point(consts["bias"], w2, attrs["in_zp"])
    new = {"bias": double_bias(folded) if not rq.left else folded}
    if rq.changed:
        new.update(mult=rq.mult, shift=rq.shift)
    zp4 = int(np.array([attrs["in_zp"]] * 4, np.int8).view("<i4")[0])  # the zero point in each byte
    a, new["qp"] = layer_params(dict(attrs, requant_left=rq.left), zp4)
    return a, new


def template(attrs, shapes):
    g = geometry(attrs, shapes)
    H, W, C, KH, KW, CO, OH, OW, DM, WP = (g[k] for k in ("H", "W", "C", "KH", "KW", "CO", "OH", "OW", "DM", "WP"))
    padded = g["padded"]
    (SH, SW), (PT, PL, _, _), (DH, DW) = attrs["strides"], attrs["pads"], attrs["dilations"]
    full = bool(attrs["act_full"])
    left = bool(attrs.get("requant_left", True))
    RH = KH if padded else H  # rows of the buffer the taps read
    RW = WP if padded else W

    words = C % 4 == 0  # rows copied and filled a word at a time (every offset is a multiple of 4)

    @T.macro
    def fill(R, QP, start, n):
        if words:
            for j in range(n // 4):
                T.evaluate(T.call_extern("void", "ep_st32a", T.address_of(R[start + j * 4]), QP[QP_INPUT_WORD]))
        else:
            for j in range(n):
                R[start + j] = T.Cast("int8", QP[QP_IN_ZP])

    @T.macro
    def fill_rows(X, R, QP, oy):
        for ky in range(KH):
            if 0 <= oy * SH - PT + ky * DH < H:
                fill(R, QP, ky * WP * C, PL * C)
                if words:
                    for j in range(W * C // 4):
                        T.evaluate(T.call_extern(
                            "void", "ep_st32a", T.address_of(R[(ky * WP + PL) * C + j * 4]),
                            T.call_extern("int32", "ep_ld32", T.address_of(X[(oy * SH - PT + ky * DH) * W * C + j * 4]))))
                else:
                    for j in range(W * C):
                        R[(ky * WP + PL) * C + j] = X[(oy * SH - PT + ky * DH) * W * C + j]
                fill(R, QP, (ky * WP + PL + W) * C, (WP - PL - W) * C)
            else:
                fill(R, QP, ky * WP * C, WP * C)

    @T.prim_func(s_tir=True)
    def kernel(x: T.handle("int8"), w: T.handle("int8"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8"), qp: T.handle("int32"), scratch: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Wt = T.decl_buffer((KH * KW * CO,), "int8", data=w)
        B = T.decl_buffer((CO,), "int32", data=bias)
        M = T.decl_buffer((CO,), "int32", data=mult)
        S = T.decl_buffer((CO,), "int32", data=shift)
        Y = T.decl_buffer((OH * OW * CO,), "int8", data=y)
        QP = T.decl_buffer((5,), "int32", data=qp)
        R = T.decl_buffer((RH * RW * C,), "int8", data=scratch if padded else x)
        with T.sblock("root"):
            Acc = T.sblock_alloc_buffer((OH, OW, CO), "int32")
            for oy in range(OH):
                if padded:
                    with T.sblock("rows"):
                        voy = T.axis.spatial(OH, oy)
                        T.reads(X[0:H * W * C], QP[0:5])
                        T.writes(R[0:RH * RW * C])
                        fill_rows(X, R, QP, voy)
                for ox, o, ky, kx in T.grid(OW, CO, KH, KW):
                    with T.sblock("mac"):
                        voy = T.axis.spatial(OH, oy)
                        vox, vo, vky, vkx = T.axis.remap("SSRR", [ox, o, ky, kx])
                        with T.init():
                            Acc[voy, vox, vo] = 0
                        # SMLABB: acc + lo16(a) * lo16(b), = acc + x * w for int8 x, w (the multiply-accumulate
                        # as one instruction the compiler keeps in order: written as acc + x * w, GCC loads
                        # all of a pixel's taps first and spills them)
                        if padded:
                            Acc[voy, vox, vo] = T.call_extern(
                                "int32", "ep_smlabb", T.Cast("int32", R[(vky * WP + vox * SW + vkx * DW) * C + vo // DM]),
                                T.Cast("int32", Wt[(vky * KW + vkx) * CO + vo]), Acc[voy, vox, vo])
                        else:
                            Acc[voy, vox, vo] = T.call_extern(
                                "int32", "ep_smlabb",
                                T.Cast("int32", R[((voy * SH + vky * DH) * W + vox * SW + vkx * DW) * C + vo // DM]),
                                T.Cast("int32", Wt[(vky * KW + vkx) * CO + vo]), Acc[voy, vox, vo])
            for oy, ox, o in T.grid(OH, OW, CO):
                with T.sblock("out"):
                    voy, vox, vo = T.axis.remap("SSS", [oy, ox, o])
                    requantize32_store(Y, (voy * OW + vox) * CO + vo, Acc[voy, vox, vo], B[vo], M[vo], S[vo],
                                       T.shift_left(T.int32(1), right_shift(S[vo], left)), right_shift(S[vo], left),
                                       left, QP[QP_OUT_ZP], QP[QP_MIN], QP[QP_MAX], full)()

    return kernel


def schedule(sch, attrs, shapes):
    mac, out = sch.get_sblock("mac"), sch.get_sblock("out")
    oy, ox, o, ky, kx = sch.get_loops(mac)
    sch.reverse_compute_at(out, o)
    sch.unroll(ky)
    sch.unroll(kx)
    sch.decompose_reduction(mac, ky)
    return sch
