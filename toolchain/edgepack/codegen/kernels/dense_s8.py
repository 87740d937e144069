"""ep_dense_s8: int8 fully connected layer, (O, F) int8 weights, int32 bias, per-channel requantization.

The input is read as F contiguous int8 values whatever its shape (a flattened NHWC tensor is already in the
(H, W, C) order the weights were permuted to), so the inner loop walks one weight row and the input.
"""

import math

from tvm.script import tirx as T

from .common import requantize_store

PARAMS = ["x", "w", "bias", "mult", "shift", "y"]
CONST = {"x", "w", "bias", "mult", "shift"}


def template(attrs, shapes):
    F = math.prod(shapes["x"][1:])
    O, FW = shapes["w"]
    if FW != F:
        raise ValueError(f"dense_s8: weight columns {FW} != input features {F}")
    in_zp, out_zp = attrs["in_zp"], attrs["out_zp"]
    lo, hi = attrs["act_min"], attrs["act_max"]

    @T.prim_func
    def kernel(x: T.handle("int8"), w: T.handle("int8"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((F,), "int8", data=x)
        Wt = T.decl_buffer((O * F,), "int8", data=w)
        B = T.decl_buffer((O,), "int32", data=bias)
        M = T.decl_buffer((O,), "int32", data=mult)
        S = T.decl_buffer((O,), "int32", data=shift)
        Y = T.decl_buffer((O,), "int8", data=y)
        acc = T.alloc_buffer((1,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for o in range(O):
            acc[0] = B[o]
            for i in range(F):
                acc[0] = acc[0] + (T.Cast("int32", X[i]) - in_zp) * T.Cast("int32", Wt[o * F + i])
            requantize_store(Y, o, acc[0], M[o], S[o], t, out_zp, lo, hi)

    return kernel
