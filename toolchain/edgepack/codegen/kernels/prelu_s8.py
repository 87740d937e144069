"""ep_prelu_s8: TFLite PRELU with per-channel int8 slopes and one requantization per sign (reference
ops.prelu_s8): v = x - in_zp; y = clamp(out_zp + (v >= 0 ? requantize(v, pos_mult, pos_shift)
: requantize(v * (alpha[c] - alpha_zp), neg_mult, neg_shift)), -128, 127)."""

from tvm import tirx

from .common import buffer, c64, clamp_expr, hwc, i64, prim_func, requant_expr, store

PARAMS = ["x", "alpha", "y"]
CONST = {"x", "alpha"}


def template(attrs, shapes):
    from tvm.script.ir_builder import tirx as IRT

    h, w, c = hwc(shapes["x"])
    if tuple(shapes["alpha"]) != (c,):
        raise ValueError(f"prelu_s8: {c} channels but {shapes['alpha']} slopes")
    zp, azp = int(attrs["in_zp"]), int(attrs["alpha_zp"])
    vlo, vhi = -128 - zp, 127 - zp
    alo, ahi = -128 - azp, 127 - azp
    corners = [u * v for u in (vlo, vhi) for v in (alo, ahi)]
    with prim_func(PARAMS, ["int8", "int8", "int8"]) as f:
        X = buffer(f.args["x"], "int8", h * w * c)
        A = buffer(f.args["alpha"], "int8", c)
        Y = buffer(f.args["y"], "int8", h * w * c)
        with IRT.grid(h * w, c) as (p, k):
            v = i64(X[p * c + k]) - c64(zp)
            pos = requant_expr(v, attrs["pos_mult"], attrs["pos_shift"], 0, max(vhi, 0))
            neg = requant_expr(v * (i64(A[k]) - c64(azp)), attrs["neg_mult"], attrs["neg_shift"], min(corners),
                               max(corners))
            out = tirx.Select(v >= c64(0), pos, neg) + c64(attrs["out_zp"])
            store(Y, clamp_expr(out, -128, 127).astype("int8"), p * c + k)
    return f.func
