"""ep_conv_transpose2d_s8: int8 NHWC transposed convolution (TFLite TRANSPOSE_CONV), OHWI per-channel int8
weights, int32 bias, per-channel requantization.

Written as a gather so that no int32 scratch of the whole output is needed: output (oy, ox) sums, over the
taps (ky, kx), the input pixel iy = (oy + PT - ky * DH) / SH when that division is exact and in range (the
same for x). The numerator is offset by a multiple of SH so it is never negative (C's % and / then agree with
the floor definitions).
"""

from tvm.script import tirx as T

from .common import requantize_store

PARAMS = ["x", "w", "bias", "mult", "shift", "y"]
CONST = {"x", "w", "bias", "mult", "shift"}


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    O, KH, KW, _ = shapes["w"]
    _, OH, OW, _ = shapes["y"]
    (SH, SW), (PT, PL, _, _), (DH, DW) = attrs["strides"], attrs["pads"], attrs["dilations"]
    in_zp, out_zp = attrs["in_zp"], attrs["out_zp"]
    lo, hi = attrs["act_min"], attrs["act_max"]
    QH = -(-(DH * (KH - 1)) // SH)  # offsets (in strides) that make the numerators non-negative
    QW = -(-(DW * (KW - 1)) // SW)

    @T.prim_func
    def kernel(x_p: T.handle("int8"), w_p: T.handle("int8"), b_p: T.handle("int32"), m_p: T.handle("int32"),
               s_p: T.handle("int32"), y_p: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x_p)
        Wt = T.decl_buffer((O * KH * KW * C,), "int8", data=w_p)
        B = T.decl_buffer((O,), "int32", data=b_p)
        M = T.decl_buffer((O,), "int32", data=m_p)
        S = T.decl_buffer((O,), "int32", data=s_p)
        Y = T.decl_buffer((OH * OW * O,), "int8", data=y_p)
        acc = T.alloc_buffer((1,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for oy, ox, oc in T.grid(OH, OW, O):
            acc[0] = B[oc]
            for ky in range(KH):
                if T.truncmod(oy + PT - ky * DH + QH * SH, SH) == 0 \
                        and T.truncdiv(oy + PT - ky * DH + QH * SH, SH) >= QH \
                        and T.truncdiv(oy + PT - ky * DH + QH * SH, SH) < H + QH:
                    for kx in range(KW):
                        if T.truncmod(ox + PL - kx * DW + QW * SW, SW) == 0 \
                                and T.truncdiv(ox + PL - kx * DW + QW * SW, SW) >= QW \
                                and T.truncdiv(ox + PL - kx * DW + QW * SW, SW) < W + QW:
                            for ic in range(C):
                                acc[0] = acc[0] + (T.Cast("int32", X[
                                    ((T.truncdiv(oy + PT - ky * DH + QH * SH, SH) - QH) * W
                                     + T.truncdiv(ox + PL - kx * DW + QW * SW, SW) - QW) * C + ic]) - in_zp) \
                                    * T.Cast("int32", Wt[((oc * KH + ky) * KW + kx) * C + ic])
            requantize_store(Y, (oy * OW + ox) * O + oc, acc[0], M[oc], S[oc], t, out_zp, lo, hi)

    return kernel
