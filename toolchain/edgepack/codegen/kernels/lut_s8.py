"""ep_lut_s8: y = table[x + 128] element-wise, an int8 -> int8 function tabulated at build time.

The 256-entry int8 table is a const array in weights.c (flash); the reference reads the same table, so the C
equals the specification by construction. compress/quantize.py fills it with the correctly rounded value of the
float function (pointwise.UNARY, or a fused chain of them) at every int8 input.
"""

import math

from tvm.script import tirx as T

PARAMS = ["x", "table", "y"]
CONST = {"x", "table"}


def template(attrs, shapes):
    N = math.prod(shapes["x"][1:])
    if tuple(shapes["table"]) != (256,):
        raise ValueError(f"lut_s8: the table must have shape (256,), got {shapes['table']}")

    @T.prim_func
    def kernel(x: T.handle("int8"), table: T.handle("int8"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((N,), "int8", data=x)
        L = T.decl_buffer((256,), "int8", data=table)
        Y = T.decl_buffer((N,), "int8", data=y)
        for i in range(N):
            Y[i] = L[T.Cast("int32", X[i]) + 128]

    return kernel
