"""ep_dense_s8_csr: int8 fully connected layer with CSR int8 weights (pack/sparse.py; uint8 or uint16 column indices).

Output o sums (x[k] - in_zp) * value over the stored nonzeros (k, value) of row o only, then requantizes as
the int8 dense layer (reference/ops_sparse.py). The input is read as F contiguous int8 values.
"""

import math

from tvm.script import tirx as T

from .common import requantize_store

PARAMS = ["x", "values", "index", "rowptr", "bias", "mult", "shift", "y"]
CONST = {"x", "values", "index", "rowptr", "bias", "mult", "shift"}


def template(attrs, shapes):
    F = math.prod(shapes["x"][1:])
    O, FW = attrs["wshape"]
    if FW != F:
        raise ValueError(f"dense_s8_csr: weight columns {FW} != input features {F}")
    NNZ = shapes["values"][0]
    IDX = "uint8" if FW <= 256 else "uint16"  # pack/sparse.py index_dtype
    in_zp, out_zp = attrs["in_zp"], attrs["out_zp"]
    lo, hi = attrs["act_min"], attrs["act_max"]

    @T.prim_func
    def kernel(x_p: T.handle("int8"), v_p: T.handle("int8"), i_p: T.handle(IDX), r_p: T.handle("int32"),
               b_p: T.handle("int32"), m_p: T.handle("int32"), s_p: T.handle("int32"), y_p: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((F,), "int8", data=x_p)
        V = T.decl_buffer((NNZ,), "int8", data=v_p)
        I = T.decl_buffer((NNZ,), IDX, data=i_p)
        R = T.decl_buffer((O + 1,), "int32", data=r_p)
        B = T.decl_buffer((O,), "int32", data=b_p)
        M = T.decl_buffer((O,), "int32", data=m_p)
        S = T.decl_buffer((O,), "int32", data=s_p)
        Y = T.decl_buffer((O,), "int8", data=y_p)
        acc = T.alloc_buffer((1,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for o in range(O):
            acc[0] = B[o]
            for j in T.serial(R[o], R[o + 1]):
                acc[0] = acc[0] + (T.Cast("int32", X[T.Cast("int32", I[j])]) - in_zp) * T.Cast("int32", V[j])
            requantize_store(Y, o, acc[0], M[o], S[o], t, out_zp, lo, hi)

    return kernel
