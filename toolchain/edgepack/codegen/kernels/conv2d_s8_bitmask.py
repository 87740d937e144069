"""ep_conv2d_s8_bitmask: int8 NHWC convolution with bitmask-sparse int8 weights (pack/sparse.py).

Row o of the weights is a bitmask over its K = KH*KW*I positions (OHWI order) and the row's nonzero values in
order. For every output pixel and channel the kernel walks the taps like the dense conv; at each position whose
bit is set it takes the next value (a running index from rowptr[o]), multiplying only where the tap lies inside
the image (padded taps add 0 but still consume their value). Same integers as the int8 conv
(reference/ops_sparse.py).
"""

from tvm.script import tirx as T

from .common import requantize_store

PARAMS = ["x", "values", "mask", "rowptr", "bias", "mult", "shift", "y"]
CONST = {"x", "values", "mask", "rowptr", "bias", "mult", "shift"}


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    O, KH, KW, CW = attrs["wshape"]
    NNZ = shapes["values"][0]
    KB = (KH * KW * CW + 7) // 8
    _, OH, OW, _ = shapes["y"]
    (SH, SW), (PT, PL, _, _), (DH, DW) = attrs["strides"], attrs["pads"], attrs["dilations"]
    in_zp, out_zp = attrs["in_zp"], attrs["out_zp"]
    lo, hi = attrs["act_min"], attrs["act_max"]

    @T.prim_func
    def kernel(x_p: T.handle("int8"), v_p: T.handle("int8"), k_p: T.handle("uint8"), r_p: T.handle("int32"),
               b_p: T.handle("int32"), m_p: T.handle("int32"), s_p: T.handle("int32"), y_p: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x_p)
        V = T.decl_buffer((NNZ,), "int8", data=v_p)
        K = T.decl_buffer((O * KB,), "uint8", data=k_p)
        R = T.decl_buffer((O + 1,), "int32", data=r_p)
        B = T.decl_buffer((O,), "int32", data=b_p)
        M = T.decl_buffer((O,), "int32", data=m_p)
        S = T.decl_buffer((O,), "int32", data=s_p)
        Y = T.decl_buffer((OH * OW * O,), "int8", data=y_p)
        acc = T.alloc_buffer((1,), "int32")
        p = T.alloc_buffer((1,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for oy, ox, oc in T.grid(OH, OW, O):
            acc[0] = B[oc]
            p[0] = R[oc]
            for ky, kx, ic in T.grid(KH, KW, C):
                if (T.Cast("int32", K[oc * KB + T.truncdiv((ky * KW + kx) * C + ic, 8)])
                        >> T.truncmod((ky * KW + kx) * C + ic, 8)) & 1 == 1:
                    if (0 <= oy * SH - PT + ky * DH) and (oy * SH - PT + ky * DH < H) \
                            and (0 <= ox * SW - PL + kx * DW) and (ox * SW - PL + kx * DW < W):
                        acc[0] = acc[0] + (T.Cast("int32", X[((oy * SH - PT + ky * DH) * W + ox * SW - PL
                                                               + kx * DW) * C + ic]) - in_zp) \
                            * T.Cast("int32", V[p[0]])
                    p[0] = p[0] + 1
            requantize_store(Y, (oy * OW + ox) * O + oc, acc[0], M[oc], S[oc], t, out_zp, lo, hi)

    return kernel
