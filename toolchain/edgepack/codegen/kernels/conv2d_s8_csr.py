"""ep_conv2d_s8_csr: int8 NHWC convolution with CSR int8 weights (pack/sparse.py; uint8 or uint16 column indices).

For every output pixel and channel o the kernel walks only the stored nonzeros of row o: the column k of a
value splits into (ky, kx, ic) = (k // (KW*I), k // I % KW, k % I) (divisions by layer constants), the tap's
input is read where it lies inside the image (padded taps add 0), and the int32 sum is requantized as the
int8 conv's (reference/ops_sparse.py).
"""

from tvm.script import tirx as T

from .common import requantize_store

PARAMS = ["x", "values", "index", "rowptr", "bias", "mult", "shift", "y"]
CONST = {"x", "values", "index", "rowptr", "bias", "mult", "shift"}


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    O, KH, KW, CW = attrs["wshape"]
    NNZ = shapes["values"][0]
    IDX = "uint8" if KH * KW * CW <= 256 else "uint16"  # pack/sparse.py index_dtype
    _, OH, OW, _ = shapes["y"]
    (SH, SW), (PT, PL, _, _), (DH, DW) = attrs["strides"], attrs["pads"], attrs["dilations"]
    in_zp, out_zp = attrs["in_zp"], attrs["out_zp"]
    lo, hi = attrs["act_min"], attrs["act_max"]
    padded = any(attrs["pads"])

    @T.prim_func
    def kernel(x_p: T.handle("int8"), v_p: T.handle("int8"), i_p: T.handle(IDX), r_p: T.handle("int32"),
               b_p: T.handle("int32"), m_p: T.handle("int32"), s_p: T.handle("int32"), y_p: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x_p)
        V = T.decl_buffer((NNZ,), "int8", data=v_p)
        I = T.decl_buffer((NNZ,), IDX, data=i_p)
        R = T.decl_buffer((O + 1,), "int32", data=r_p)
        B = T.decl_buffer((O,), "int32", data=b_p)
        M = T.decl_buffer((O,), "int32", data=m_p)
        S = T.decl_buffer((O,), "int32", data=s_p)
        Y = T.decl_buffer((OH * OW * O,), "int8", data=y_p)
        acc = T.alloc_buffer((1,), "int32")
        k = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for oy, ox, oc in T.grid(OH, OW, O):
            acc[0] = B[oc]
            for j in T.serial(R[oc], R[oc + 1]):
                k[0] = T.Cast("int32", I[j])
                k[1] = T.truncdiv(k[0], KW * C)               # ky
                k[2] = oy * SH - PT + k[1] * DH              # input row
                k[3] = ox * SW - PL + T.truncmod(T.truncdiv(k[0], C), KW) * DW  # input column
                if padded:
                    if (0 <= k[2]) and (k[2] < H) and (0 <= k[3]) and (k[3] < W):
                        acc[0] = acc[0] + (T.Cast("int32", X[(k[2] * W + k[3]) * C + T.truncmod(k[0], C)]) - in_zp) \
                            * T.Cast("int32", V[j])
                else:
                    acc[0] = acc[0] + (T.Cast("int32", X[(k[2] * W + k[3]) * C + T.truncmod(k[0], C)]) - in_zp) \
                        * T.Cast("int32", V[j])
            requantize_store(Y, (oy * OW + ox) * O + oc, acc[0], M[oc], S[oc], t, out_zp, lo, hi)

    return kernel
