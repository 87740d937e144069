"""ep_dense_exp: fully connected layer with exponent-coded weights, int32 bias, per-channel requantization:
bit-exact with reference.ops_exp.dense_exp.

codes: (O, row_bytes) uint8, row o holding the F codes of output channel o (wshape (O, F)); the input is F
contiguous int8 values whatever its shape, as in dense_s8. Every weight is used once, so it is decoded where
it is used: the row is walked in byte-aligned groups (exp_common.group: 2 codes per byte for 4 bits, 4 for
2 bits, 8 codes in b bytes for 3 and 5 bits, 4 in 3 bytes for 6), every code's byte and shift inside the group
being constants, and decoded through the 2^b-entry table. CH output channels go together so each input
(x - zp) is loaded once for all of them.

Strategies (attribute ``exp_strategy``, default STRATEGY): ``mul`` multiplies by the decoded weight; ``shift``
adds or subtracts (x - zp) * 2^s, zero codes skipped.
"""

from __future__ import annotations

import math

from tvm.script import tirx as T

from .exp_common import (code_rows, check_exp_attrs, group, requantize_store32, shift_table_macro, static_code,
                         table_macro)

PARAMS = ["x", "codes", "bias", "mult", "shift", "y"]
CONST = {"x", "codes", "bias", "mult", "shift"}

STRATEGY = "mul"  # "mul" or "shift"; attribute exp_strategy overrides
CHANNELS = 4  # output channels per pass over the input


def template(attrs, shapes):
    F = math.prod(shapes["x"][1:])
    O, FW = (int(v) for v in attrs["wshape"])
    if FW != F:
        raise ValueError(f"dense_exp: weight columns {FW} != input features {F}")
    bits, top = check_exp_attrs("dense_exp", attrs)
    strategy = attrs.get("exp_strategy", STRATEGY)
    if strategy not in ("mul", "shift"):
        raise ValueError(f"dense_exp: exp_strategy must be 'mul' or 'shift', got {strategy!r}")
    RB = code_rows("dense_exp", shapes, O, F, bits)
    in_zp, out_zp = int(attrs["in_zp"]), int(attrs["out_zp"])
    lo, hi = attrs["act_min"], attrs["act_max"]
    G, GB = group(bits)  # codes, bytes per group
    NG, REM = F // G, F % G  # whole groups; codes of the last, partial group (static places too)
    CH = min(CHANNELS, O)
    NB, TAIL = O // CH, O % CH
    fill = shift_table_macro(bits, top, 0) if strategy == "shift" else table_macro(bits, top, 0)

    XV, DV, TQ = 0, 1, 2  # scalar slots

    @T.macro
    def mac(acc, sc, j, w):
        if strategy == "shift":
            sc[DV] = w
            if sc[DV] >= 0:
                sc[TQ] = sc[XV] * T.shift_left(1, sc[DV] & 31)
                acc[j] = T.Select((sc[DV] & 256) != 0, acc[j] - sc[TQ], acc[j] + sc[TQ])
        else:
            acc[j] = acc[j] + sc[XV] * w

    @T.macro
    def block(X, Cb, TW, B, M, S, Y, acc, sc, rq, t, o0, n):
        for j in T.unroll(n):
            acc[j] = B[o0 + j]
        for gi in range(NG):
            for c in T.unroll(G):
                sc[XV] = T.Cast("int32", X[gi * G + c]) - in_zp
                for j in T.unroll(n):
                    mac(acc, sc, j, TW[static_code(Cb, (o0 + j) * RB + gi * GB, c, bits)])
        if REM > 0:
            for c in T.unroll(REM):
                sc[XV] = T.Cast("int32", X[NG * G + c]) - in_zp
                for j in T.unroll(n):
                    mac(acc, sc, j, TW[static_code(Cb, (o0 + j) * RB + NG * GB, c, bits)])
        for j in T.unroll(n):
            requantize_store32(Y, o0 + j, acc[j], M[o0 + j], S[o0 + j], rq, t, out_zp, lo, hi)

    @T.prim_func
    def kernel(x: T.handle("int8"), codes: T.handle("uint8"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((F,), "int8", data=x)
        Cb = T.decl_buffer((O * RB,), "uint8", data=codes)
        B = T.decl_buffer((O,), "int32", data=bias)
        M = T.decl_buffer((O,), "int32", data=mult)
        S = T.decl_buffer((O,), "int32", data=shift)
        Y = T.decl_buffer((O,), "int8", data=y)
        TW = T.alloc_buffer((1 << bits,), "int32")
        acc = T.alloc_buffer((CH,), "int32")
        sc = T.alloc_buffer((3,), "int32")
        rq = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((1,), "int64")
        fill(TW, 0)
        if NB == 1:
            block(X, Cb, TW, B, M, S, Y, acc, sc, rq, t, 0, CH)
        else:
            for ob in range(NB):
                block(X, Cb, TW, B, M, S, Y, acc, sc, rq, t, ob * CH, CH)
        if TAIL > 0:
            block(X, Cb, TW, B, M, S, Y, acc, sc, rq, t, NB * CH, TAIL)

    return kernel
