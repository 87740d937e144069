"""ep_dense_expcb: fully connected layer with exponential-codebook weights (``--weights expN``), int32 bias,
per-channel requantization: bit-exact with reference.ops_exp.dense_expcb.

codes: (O, row_bytes) uint8, row o holding the F codes of output channel o (wshape (O, F)); codebook (G,
2^(b-1)) int16, G = O or 1 (see conv2d_expcb); the input is F contiguous int8 values whatever its shape, as in
dense_s8. Every weight is used once, so it is decoded where it is used: acc = bias + sum_k (x_k - in_zp) *
TS[code k], TS the channel's 2^b-entry signed table built from its codebook row (once for a per-layer
codebook). A loop, no unrolling (code size); requantization exp_common.requantize_store32.
"""

from __future__ import annotations

import math

from tvm.script import tirx as T

from .exp_common import code_rows, check_codebook, code_at, requantize_store32, signed_table_macro

PARAMS = ["x", "codes", "codebook", "bias", "mult", "shift", "y"]
CONST = {"x", "codes", "codebook", "bias", "mult", "shift"}


def template(attrs, shapes):
    F = math.prod(shapes["x"][1:])
    O, FW = (int(v) for v in attrs["wshape"])
    if FW != F:
        raise ValueError(f"dense_expcb: weight columns {FW} != input features {F}")
    bits, G, NC = check_codebook("dense_expcb", attrs, shapes, O)
    RB = code_rows("dense_expcb", shapes, O, F, bits)
    in_zp, out_zp = int(attrs["in_zp"]), int(attrs["out_zp"])
    lo, hi = attrs["act_min"], attrs["act_max"]
    fill = signed_table_macro(bits, NC)

    @T.prim_func
    def kernel(x: T.handle("int8"), codes: T.handle("uint8"), codebook: T.handle("int16"), bias: T.handle("int32"),
               mult: T.handle("int32"), shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((F,), "int8", data=x)
        Cb = T.decl_buffer((O * RB,), "uint8", data=codes)
        CBk = T.decl_buffer((G * NC,), "int16", data=codebook)
        B = T.decl_buffer((O,), "int32", data=bias)
        M = T.decl_buffer((O,), "int32", data=mult)
        S = T.decl_buffer((O,), "int32", data=shift)
        Y = T.decl_buffer((O,), "int8", data=y)
        TS = T.alloc_buffer((1 << bits,), "int32")
        acc = T.alloc_buffer((1,), "int32")
        rq = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((1,), "int64")
        if G == 1:
            fill(TS, CBk, 0)
        for oc in range(O):
            if G > 1:
                fill(TS, CBk, oc)
            acc[0] = B[oc]
            for k in range(F):
                acc[0] = acc[0] + (T.Cast("int32", X[k]) - in_zp) * TS[code_at(Cb, oc * RB, k, bits, RB)]
            requantize_store32(Y, oc, acc[0], M[oc], S[oc], rq, t, out_zp, lo, hi)

    return kernel
