"""ep_add_s8: int8 element-wise sum of n inputs with signs (TFLite ADD and SUB; ONNX Sum), broadcasting, with
per-tensor compile-time requantization (reference ops.add_s8):

    v_i = requantize((x_i - zp_i) << left_shift, mult_i, shift_i)
    y   = clamp(requantize(sum_i sign_i v_i, out_mult, out_shift) + out_zp, act_min, act_max)

Every multiplier and shift is a literal, so each requantization is specialised: the int32 saturation of a left
shift is emitted only where the value range (from the int8 range of the input, through the reference
arithmetic, which is monotonic) can leave int32. Inputs of other shapes broadcast (an (N, 1, 1, C) per-channel
operand, a constant). Built with TVM's IRBuilder: the number of inputs is the layer's.
"""

import numpy as np

from .common import (buffer, c64, clamp_expr, elementwise_loops, i64, prim_func, requant_expr, requant_range,
                     store, variadic_params)

params = variadic_params  # x0 .. x{n-1}, y


def template(attrs, shapes):
    n = len(attrs["zps"])
    names = variadic_params(n)
    ls = int(attrs["left_shift"])
    terms, lo, hi = [], 0, 0
    for zp, m, sh, sg in zip(attrs["zps"], attrs["mults"], attrs["shifts"], attrs["signs"]):
        xlo, xhi = (-128 - int(zp)) << ls, (127 - int(zp)) << ls
        vlo, vhi = requant_range(xlo, xhi, m, sh)
        terms.append((int(zp), (xlo, xhi)))
        lo, hi = (lo + vlo, hi + vhi) if sg > 0 else (lo - vhi, hi - vlo)
    with prim_func(names, ["int8"] * (n + 1)) as f:
        xs = [buffer(f.args[p], "int8", np.prod(shapes[p][1:])) for p in names[:-1]]
        Y = buffer(f.args["y"], "int8", np.prod(shapes["y"][1:]))
        with elementwise_loops(shapes["y"], [shapes[p] for p in names[:-1]]) as (iy, ix):
            acc = None
            for X, j, (zp, (xlo, xhi)), m, sh, sg in zip(xs, ix, terms, attrs["mults"], attrs["shifts"],
                                                         attrs["signs"]):
                v = requant_expr((i64(X[j]) - c64(zp)) * c64(1 << ls), m, sh, xlo, xhi)
                v = v if sg > 0 else c64(0) - v
                acc = v if acc is None else acc + v
            out = requant_expr(acc, attrs["out_mult"], attrs["out_shift"], lo, hi) + c64(attrs["out_zp"])
            store(Y, clamp_expr(out, attrs["act_min"], attrs["act_max"]).astype("int8"), iy)
    return f.func
