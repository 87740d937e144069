"""ep_maxpool_s8: int8 NHWC max pooling over the in-bounds taps of each window (padding never wins).

Like CMSIS-NN's arm_max_pool_s8, the output pixel is the running maximum: it starts at -128 (the smallest
int8, so the first in-bounds tap replaces it) and each in-bounds tap is folded in with a contiguous loop over
channels. A window lying wholly in the padding has no in-bounds tap; the reference then yields int8(-129),
i.e. 127, and so does this kernel (only emitted when such a window exists). Dilated pooling (attr
``dilations``) reads the taps DH / DW apart.
"""

from tvm import tirx
from tvm.script import tirx as T

PARAMS = ["x", "y"]
CONST = {"x"}


def _empty_window_exists(n_in, n_out, k, s, p, d=1):
    return any(not _any_tap_in_bounds(n_in, 1, k, 1, p - o * s, d) for o in range(n_out))


def _any_tap_in_bounds(n_in, n_out, k, s, p, d=1):
    """Whether some window tap along one axis reads the input (else the kernel never reads x)."""
    return any(0 <= o * s - p + i * d < n_in for o in range(n_out) for i in range(k))


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    _, OH, OW, _ = shapes["y"]
    KH, KW = attrs["kernel"]
    (SH, SW), (PT, PL, _, _) = attrs["strides"], attrs["pads"]
    DH, DW = attrs.get("dilations", (1, 1))
    padded = any(attrs["pads"])
    empty_rows = _empty_window_exists(H, OH, KH, SH, PT, DH)
    empty_cols = _empty_window_exists(W, OW, KW, SW, PL, DW)
    reads_x = _any_tap_in_bounds(H, OH, KH, SH, PT, DH) and _any_tap_in_bounds(W, OW, KW, SW, PL, DW)

    def empty_axis(start, k, d, n):  # no tap start + i * d (i < k) lies in [0, n): a boolean TIR expression
        return tirx.all(*[tirx.any(start + i * d < 0, start + i * d >= n) for i in range(k)])

    @T.prim_func
    def kernel(x: T.handle("int8"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Y = T.decl_buffer((OH * OW * C,), "int8", data=y)
        if not reads_x:
            T.evaluate(T.call_extern("int32", "(void)", x))  # every window lies in the padding
        for oy, ox in T.grid(OH, OW):
            if (empty_rows or empty_cols) and DH == 1 and DW == 1:
                for c in range(C):
                    Y[(oy * OW + ox) * C + c] = T.Select(
                        (oy * SH - PT + KH <= 0) or (oy * SH - PT >= H) or (ox * SW - PL + KW <= 0)
                        or (ox * SW - PL >= W), T.int8(127), T.int8(-128))
            elif empty_rows or empty_cols:  # dilated: a window is empty when no tap of it is in bounds
                for c in range(C):
                    Y[(oy * OW + ox) * C + c] = T.Select(
                        empty_axis(oy * SH - PT, KH, DH, H) or empty_axis(ox * SW - PL, KW, DW, W),
                        T.int8(127), T.int8(-128))
            else:
                for c in range(C):
                    Y[(oy * OW + ox) * C + c] = T.int8(-128)
            for ky in range(KH):
                if padded:
                    if 0 <= oy * SH - PT + ky * DH < H:
                        for kx in range(KW):
                            if 0 <= ox * SW - PL + kx * DW < W:
                                for c in range(C):
                                    Y[(oy * OW + ox) * C + c] = T.max(
                                        Y[(oy * OW + ox) * C + c],
                                        X[((oy * SH - PT + ky * DH) * W + ox * SW - PL + kx * DW) * C + c])
                else:
                    for kx in range(KW):
                        for c in range(C):
                            Y[(oy * OW + ox) * C + c] = T.max(
                                Y[(oy * OW + ox) * C + c], X[((oy * SH + ky * DH) * W + ox * SW + kx * DW) * C + c])

    return kernel
