"""ep_maxpool_s8: int8 NHWC max pooling over the in-bounds taps of each window (padding never wins).

Like CMSIS-NN's arm_max_pool_s8, the output pixel is the running maximum: it starts at -128 (the smallest
int8, so the first in-bounds tap replaces it) and each in-bounds tap is folded in with a contiguous loop over
channels. A window lying wholly in the padding has no in-bounds tap; the reference then yields int8(-129),
i.e. 127, and so does this kernel (only emitted when such a window exists).
"""

from tvm.script import tirx as T

PARAMS = ["x", "y"]
CONST = {"x"}


def _empty_window_exists(n_in, n_out, k, s, p):
    return any(o * s - p + k <= 0 or o * s - p >= n_in for o in range(n_out))


def _any_tap_in_bounds(n_in, n_out, k, s, p, d=1):
    """Whether some window tap along one axis reads the input (else the kernel never reads x)."""
    return any(0 <= o * s - p + i * d < n_in for o in range(n_out) for i in range(k))


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    _, OH, OW, _ = shapes["y"]
    KH, KW = attrs["kernel"]
    (SH, SW), (PT, PL, _, _) = attrs["strides"], attrs["pads"]
    padded = any(attrs["pads"])
    empty_rows = _empty_window_exists(H, OH, KH, SH, PT)
    empty_cols = _empty_window_exists(W, OW, KW, SW, PL)
    reads_x = _any_tap_in_bounds(H, OH, KH, SH, PT) and _any_tap_in_bounds(W, OW, KW, SW, PL)

    @T.prim_func
    def kernel(x: T.handle("int8"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        Y = T.decl_buffer((OH * OW * C,), "int8", data=y)
        if not reads_x:
            T.evaluate(T.call_extern("int32", "(void)", x))  # every window lies in the padding
        for oy, ox in T.grid(OH, OW):
            if empty_rows or empty_cols:
                for c in range(C):
                    Y[(oy * OW + ox) * C + c] = T.Select(
                        (oy * SH - PT + KH <= 0) or (oy * SH - PT >= H) or (ox * SW - PL + KW <= 0)
                        or (ox * SW - PL >= W), T.int8(127), T.int8(-128))
            else:
                for c in range(C):
                    Y[(oy * OW + ox) * C + c] = T.int8(-128)
            for ky in range(KH):
                if padded:
                    if 0 <= oy * SH - PT + ky < H:
                        for kx in range(KW):
                            if 0 <= ox * SW - PL + kx < W:
                                for c in range(C):
                                    Y[(oy * OW + ox) * C + c] = T.max(
                                        Y[(oy * OW + ox) * C + c],
                                        X[((oy * SH - PT + ky) * W + ox * SW - PL + kx) * C + c])
                else:
                    for kx in range(KW):
                        for c in range(C):
                            Y[(oy * OW + ox) * C + c] = T.max(Y[(oy * OW + ox) * C + c],
                                                              X[((oy * SH + ky) * W + ox * SW + kx) * C + c])

    return kernel
