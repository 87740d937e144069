"""ep_dense_s8_bitmask: int8 fully connected layer with bitmask-sparse int8 weights (pack/sparse.py).

Output o walks the F bits of its row's mask; where a bit is set it multiplies the input by the row's next
nonzero value (a running index from rowptr[o]). Same integers as the int8 dense layer (reference/ops_sparse.py).
"""

import math

from tvm.script import tirx as T

from .common import requantize_store

PARAMS = ["x", "values", "mask", "rowptr", "bias", "mult", "shift", "y"]
CONST = {"x", "values", "mask", "rowptr", "bias", "mult", "shift"}


def template(attrs, shapes):
    F = math.prod(shapes["x"][1:])
    O, FW = attrs["wshape"]
    if FW != F:
        raise ValueError(f"dense_s8_bitmask: weight columns {FW} != input features {F}")
    NNZ = shapes["values"][0]
    KB = (F + 7) // 8
    in_zp, out_zp = attrs["in_zp"], attrs["out_zp"]
    lo, hi = attrs["act_min"], attrs["act_max"]

    @T.prim_func
    def kernel(x_p: T.handle("int8"), v_p: T.handle("int8"), k_p: T.handle("uint8"), r_p: T.handle("int32"),
               b_p: T.handle("int32"), m_p: T.handle("int32"), s_p: T.handle("int32"), y_p: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((F,), "int8", data=x_p)
        V = T.decl_buffer((NNZ,), "int8", data=v_p)
        K = T.decl_buffer((O * KB,), "uint8", data=k_p)
        R = T.decl_buffer((O + 1,), "int32", data=r_p)
        B = T.decl_buffer((O,), "int32", data=b_p)
        M = T.decl_buffer((O,), "int32", data=m_p)
        S = T.decl_buffer((O,), "int32", data=s_p)
        Y = T.decl_buffer((O,), "int8", data=y_p)
        acc = T.alloc_buffer((1,), "int32")
        p = T.alloc_buffer((1,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for o in range(O):
            acc[0] = B[o]
            p[0] = R[o]
            for i in range(F):
                if (T.Cast("int32", K[o * KB + T.truncdiv(i, 8)]) >> T.truncmod(i, 8)) & 1 == 1:
                    acc[0] = acc[0] + (T.Cast("int32", X[i]) - in_zp) * T.Cast("int32", V[p[0]])
                    p[0] = p[0] + 1
            requantize_store(Y, o, acc[0], M[o], S[o], t, out_zp, lo, hi)

    return kernel
