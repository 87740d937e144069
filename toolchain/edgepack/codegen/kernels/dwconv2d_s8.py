"""ep_dwconv2d_s8: int8 NHWC depthwise convolution, (KH, KW, C*DM) int8 weights, int32 bias, per-channel
requantization; output channel c reads input channel c // depth_multiplier.

The input channels are processed in blocks so that the accumulators of one output pixel's block stay in a
small int32 array while the kernel taps are walked: the innermost loop runs over contiguous channels of the
input, weights, bias and output. Input and output may be strided views (attrs["layout"], codegen/memplan.py).
"""

from tvm.script import tirx as T

from .common import extent, requantize_store, view

PARAMS = ["x", "w", "bias", "mult", "shift", "y"]
CONST = {"x", "w", "bias", "mult", "shift"}

ACC_WORDS = 32  # int32 accumulators per block (stack: 128 bytes)


def _any_tap_in_bounds(n_in, n_out, k, s, p, d=1):
    """Whether some window tap along one axis reads the input (else the kernel never reads x)."""
    return any(0 <= o * s - p + i * d < n_in for o in range(n_out) for i in range(k))


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    KH, KW, CO = shapes["w"]
    _, OH, OW, _ = shapes["y"]
    DM = int(attrs.get("depth_multiplier", 1))
    if CO != C * DM:
        raise ValueError(f"dwconv2d_s8: weight channels {CO} != {C} x depth_multiplier {DM}")
    (SH, SW), (PT, PL, _, _), (DH, DW) = attrs["strides"], attrs["pads"], attrs["dilations"]
    in_zp, out_zp = attrs["in_zp"], attrs["out_zp"]
    lo, hi = attrs["act_min"], attrs["act_max"]
    padded = any(attrs["pads"])
    CB = max(1, min(C, ACC_WORDS // DM))  # input channels per block
    NB, TAIL = C // CB, C % CB
    reads_x = _any_tap_in_bounds(H, OH, KH, SH, PT, DH) and _any_tap_in_bounds(W, OW, KW, SW, PL, DW)
    XR, XP = view(attrs, "x", shapes["x"])
    YR, YP = view(attrs, "y", shapes["y"])
    NX, NY = extent(shapes["x"], XR, XP), extent(shapes["y"], YR, YP)

    @T.macro
    def taps(X, Wt, acc, iy, ix, ky, kx, c0, n):
        if DM == 1:
            for c in range(n):
                acc[c] = acc[c] + (T.Cast("int32", X[iy * XR + ix * XP + c0 + c]) - in_zp) \
                    * T.Cast("int32", Wt[(ky * KW + kx) * CO + c0 + c])
        else:
            for c, m in T.grid(n, DM):
                acc[c * DM + m] = acc[c * DM + m] + (T.Cast("int32", X[iy * XR + ix * XP + c0 + c]) - in_zp) \
                    * T.Cast("int32", Wt[(ky * KW + kx) * CO + (c0 + c) * DM + m])

    @T.macro
    def block(X, Wt, B, M, S, Y, acc, t, oy, ox, c0, n):
        # input channels [c0, c0 + n) -> output channels [c0 * DM, (c0 + n) * DM)
        for j in range(n * DM):
            acc[j] = B[c0 * DM + j]
        for ky in range(KH):
            if padded:
                if 0 <= oy * SH - PT + ky * DH < H:
                    for kx in range(KW):
                        if 0 <= ox * SW - PL + kx * DW < W:
                            taps(X, Wt, acc, oy * SH - PT + ky * DH, ox * SW - PL + kx * DW, ky, kx, c0, n)
            else:
                for kx in range(KW):
                    taps(X, Wt, acc, oy * SH + ky * DH, ox * SW + kx * DW, ky, kx, c0, n)
        for j in range(n * DM):
            requantize_store(Y, oy * YR + ox * YP + c0 * DM + j, acc[j], M[c0 * DM + j], S[c0 * DM + j], t,
                             out_zp, lo, hi)

    @T.prim_func
    def kernel(x: T.handle("int8"), w: T.handle("int8"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((NX,), "int8", data=x)
        Wt = T.decl_buffer((KH * KW * CO,), "int8", data=w)
        B = T.decl_buffer((CO,), "int32", data=bias)
        M = T.decl_buffer((CO,), "int32", data=mult)
        S = T.decl_buffer((CO,), "int32", data=shift)
        Y = T.decl_buffer((NY,), "int8", data=y)
        if not reads_x:  # every window lies in the padding: y depends on the bias only
            T.evaluate(T.call_extern("int32", "(void)", x))
            T.evaluate(T.call_extern("int32", "(void)", w))
        acc = T.alloc_buffer((CB * DM,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for oy, ox in T.grid(OH, OW):
            if NB == 1:
                block(X, Wt, B, M, S, Y, acc, t, oy, ox, 0, CB)
            else:
                for cb in range(NB):
                    block(X, Wt, B, M, S, Y, acc, t, oy, ox, cb * CB, CB)
            if TAIL > 0:
                block(X, Wt, B, M, S, Y, acc, t, oy, ox, NB * CB, TAIL)

    return kernel
