"""ep_mul_s8: int8 element-wise product, broadcasting (TFLite MUL; reference ops.mul_s8):

    y = clamp(requantize((a - a_zp) * (b - b_zp), out_mult, out_shift) + out_zp, act_min, act_max)

The product of two int8 offsets fits in 17 bits, so the left shift of a multiplier > 1 saturates only where the
literal shift says it can. An (N, 1, 1, C) operand is read with stride 0 over H and W (squeeze-excite's
per-channel scaling); a constant operand is a const array in weights.c.
"""

import numpy as np

from .common import buffer, c64, clamp_expr, elementwise_loops, i64, prim_func, requant_expr, store

PARAMS = ["a", "b", "y"]
CONST = {"a", "b"}


def template(attrs, shapes):
    a_zp, b_zp = int(attrs["a_zp"]), int(attrs["b_zp"])
    ra = (-128 - a_zp, 127 - a_zp)
    rb = (-128 - b_zp, 127 - b_zp)
    corners = [u * v for u in ra for v in rb]
    with prim_func(PARAMS, ["int8"] * 3) as f:
        A = buffer(f.args["a"], "int8", np.prod(shapes["a"][1:]))
        B = buffer(f.args["b"], "int8", np.prod(shapes["b"][1:]))
        Y = buffer(f.args["y"], "int8", np.prod(shapes["y"][1:]))
        with elementwise_loops(shapes["y"], [shapes["a"], shapes["b"]]) as (iy, (ia, ib)):
            prod = (i64(A[ia]) - c64(a_zp)) * (i64(B[ib]) - c64(b_zp))
            out = requant_expr(prod, attrs["out_mult"], attrs["out_shift"], min(corners), max(corners)) \
                + c64(attrs["out_zp"])
            store(Y, clamp_expr(out, attrs["act_min"], attrs["act_max"]).astype("int8"), iy)
    return f.func
