"""ep_softmax_s8: int8 softmax over the last axis of (1, N) through an int32[256] exp look-up table.

e[i] = lut[max(x) - x[i]], s = sum(e), y[i] = clamp((e[i] * 256 + s / 2) / s - 128, -128, 127) (output scale
1/256, zero point -128). The sum and the final quotient are computed in int64, which is exact for any int32
table and any N; floor divisions as in the reference (they are plain divisions for the non-negative exp
tables the quantizer builds); a table summing to 0 gives -128 everywhere, like the reference's x // 0 = 0.
"""

import math

from tvm.script import tirx as T

PARAMS = ["x", "lut", "y"]
CONST = {"x", "lut"}


def template(attrs, shapes):
    N = math.prod(shapes["x"][1:])
    if tuple(shapes["lut"]) != (256,):
        raise ValueError(f"softmax_s8: the look-up table must have shape (256,), got {shapes['lut']}")

    @T.prim_func
    def kernel(x: T.handle("int8"), lut: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((N,), "int8", data=x)
        L = T.decl_buffer((256,), "int32", data=lut)
        Y = T.decl_buffer((N,), "int8", data=y)
        mx = T.alloc_buffer((1,), "int32")
        s = T.alloc_buffer((2,), "int64")
        mx[0] = T.Cast("int32", X[0])
        for i in range(N - 1):
            mx[0] = T.max(mx[0], T.Cast("int32", X[i + 1]))
        s[0] = T.int64(0)
        for i in range(N):
            s[0] = s[0] + T.Cast("int64", L[mx[0] - T.Cast("int32", X[i])])
        s[1] = T.floordiv(s[0], T.int64(2))
        if s[0] == T.int64(0):
            for i in range(N):  # degenerate table: the reference's x // 0 is 0
                Y[i] = T.int8(-128)
        else:
            for i in range(N):
                Y[i] = T.Cast("int8", T.max(T.min(
                    T.floordiv(T.Cast("int64", L[mx[0] - T.Cast("int32", X[i])]) * T.int64(256) + s[1], s[0])
                    - T.int64(128), T.int64(127)), T.int64(-128)))

    return kernel
