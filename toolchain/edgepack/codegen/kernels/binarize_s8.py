"""ep_binarize_s8: int8 activations -> packed binary activations (``pack.bitplanes`` layout).

x: (1, ..., C) int8 (NHWC, or (1, F) for a vector: C = F); thresh: (C,) int16; y: (1, ..., Cw) uint32 with
Cw = ceil(C / 32). Channel c of a pixel becomes bit c % 32 of word c // 32: 1 (-1) when x < thresh[c] (its
real value is below the channel's threshold; thresh[c] = zp for a plain sign), else 0 (+1); the pad bits of
the last word are 0.
"""

import math

from tvm.script import tirx as T

PARAMS = ["x", "thresh", "y"]
CONST = {"x", "thresh"}


def template(attrs, shapes):
    xs, ys = tuple(shapes["x"]), tuple(shapes["y"])
    C = int(xs[-1])
    if "channels" in attrs and int(attrs["channels"]) != C:
        raise ValueError(f"binarize_s8: channels {attrs['channels']} != last input axis {C}")
    P = math.prod(xs[1:-1])
    CW = (C + 31) // 32
    if ys[-1] != CW or math.prod(ys[1:-1]) != P:
        raise ValueError(f"binarize_s8: output {ys} does not hold {P} pixels of {CW} words for input {xs}")
    if tuple(shapes["thresh"]) != (C,):
        raise ValueError(f"binarize_s8: thresholds {shapes['thresh']} for {C} channels")
    FULL, TAIL = C // 32, C % 32

    @T.macro
    def word(X, Th, Y, acc, p, j, nbits):
        acc[0] = T.uint32(0)
        for b in range(nbits):
            acc[0] = acc[0] | (T.Cast("uint32", T.Cast("int32", X[p * C + j * 32 + b])
                                      < T.Cast("int32", Th[j * 32 + b])) << T.Cast("uint32", b))
        Y[p * CW + j] = acc[0]

    @T.prim_func
    def kernel(x: T.handle("int8"), thresh: T.handle("int16"), y: T.handle("uint32")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((P * C,), "int8", data=x)
        Th = T.decl_buffer((C,), "int16", data=thresh)
        Y = T.decl_buffer((P * CW,), "uint32", data=y)
        acc = T.alloc_buffer((1,), "uint32")
        for p in range(P):
            for j in range(FULL):
                word(X, Th, Y, acc, p, j, 32)
            if TAIL > 0:
                word(X, Th, Y, acc, p, FULL, TAIL)

    return kernel
