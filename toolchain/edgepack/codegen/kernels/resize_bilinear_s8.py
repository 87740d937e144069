"""ep_resize_bilinear_s8: TFLite's int8 RESIZE_BILINEAR in 10-bit fixed point (reference/ops_spatial.py).

Per output row: v = oy * S10 + OFF, y0 = max(v / 1024, 0), y1 = min((v + 1023) / 1024, H - 1), fy = v - 1024 y0
(C division); the same per column; then the four raw int8 neighbours weighted by (1024 - fy)(1024 - fx), ...,
summed in int32 (|sum| < 2^29) and rounded half away from zero by 2^20. Row and column terms live in a small
int32 scratch (Select, never min/max: see common.requantize_store).
"""

from tvm.script import tirx as T

from ...reference.ops_spatial import bilinear_scale10

PARAMS = ["x", "y"]
CONST = {"x"}


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    _, OH, OW, _ = shapes["y"]
    ac, hp = bool(attrs["align_corners"]), bool(attrs["half_pixel_centers"])
    SY, SX = bilinear_scale10(H, OH, ac), bilinear_scale10(W, OW, ac)
    OFFY = SY // 2 - 512 if hp else 0
    OFFX = SX // 2 - 512 if hp else 0

    @T.macro
    def axis_terms(r, k, v, n):  # r[k:k+4] = v, lower, upper, fraction (TFLite ComputeInterpolationValues)
        r[k] = v
        r[k + 1] = T.truncdiv(r[k], 1024)
        r[k + 1] = T.Select(r[k + 1] < 0, 0, r[k + 1])
        r[k + 2] = T.truncdiv(r[k] + 1023, 1024)
        r[k + 2] = T.Select(r[k + 2] > n - 1, n - 1, r[k + 2])
        r[k + 3] = r[k] - 1024 * r[k + 1]

    @T.prim_func
    def kernel(x: T.handle("int8"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Y = T.decl_buffer((OH * OW * C,), "int8", data=y)
        r = T.alloc_buffer((8,), "int32")  # v, y0, y1, fy | u, x0, x1, fx
        acc = T.alloc_buffer((1,), "int32")
        for oy in range(OH):
            axis_terms(r, 0, oy * SY + OFFY, H)
            for ox in range(OW):
                axis_terms(r, 4, ox * SX + OFFX, W)
                for c in range(C):
                    acc[0] = T.Cast("int32", X[(r[1] * W + r[5]) * C + c]) * (1024 - r[3]) * (1024 - r[7]) \
                        + T.Cast("int32", X[(r[2] * W + r[5]) * C + c]) * r[3] * (1024 - r[7]) \
                        + T.Cast("int32", X[(r[1] * W + r[6]) * C + c]) * (1024 - r[3]) * r[7] \
                        + T.Cast("int32", X[(r[2] * W + r[6]) * C + c]) * r[3] * r[7]
                    Y[(oy * OW + ox) * C + c] = T.Cast("int8", T.truncdiv(
                        acc[0] + T.Select(acc[0] > 0, 524288, -524288), 1048576))

    return kernel
