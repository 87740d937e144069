"""ep_conv2d_s8: int8 NHWC convolution, OHWI per-channel int8 weights, int32 bias, per-channel requantization.

Grouped (attr ``groups`` g > 1, 1 < g < C, e.g. RegNet): the weights are (O, KH, KW, C/g) and output channel
oc reads input channels from (oc // (O/g)) * C/g on. Input and output may be strided views (a slice of a
concat's output: row stride, pixel stride from attrs["layout"], codegen/memplan.py); element (y, x, c) is at
y * row_stride + x * pixel_stride + c."""

from tvm.script import tirx as T

from .common import extent, requantize_store, view

PARAMS = ["x", "w", "bias", "mult", "shift", "y"]
CONST = {"x", "w", "bias", "mult", "shift"}


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    O, KH, KW, CG = shapes["w"]
    G = int(attrs.get("groups", 1))
    OG = O // G
    _, OH, OW, _ = shapes["y"]
    (SH, SW), (PT, PL, _, _), (DH, DW) = attrs["strides"], attrs["pads"], attrs["dilations"]
    in_zp, out_zp = attrs["in_zp"], attrs["out_zp"]
    lo, hi = attrs["act_min"], attrs["act_max"]
    padded = any(attrs["pads"])
    XR, XP = view(attrs, "x", shapes["x"])
    YR, YP = view(attrs, "y", shapes["y"])
    NX, NY = extent(shapes["x"], XR, XP), extent(shapes["y"], YR, YP)

    def base(oc):  # first input channel of output channel oc's group
        return 0 if G == 1 else (oc // OG) * CG

    @T.prim_func
    def kernel(x_p: T.handle("int8"), w_p: T.handle("int8"), b_p: T.handle("int32"), m_p: T.handle("int32"),
               s_p: T.handle("int32"), y_p: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((NX,), "int8", data=x_p)
        Wt = T.decl_buffer((O * KH * KW * CG,), "int8", data=w_p)
        B = T.decl_buffer((O,), "int32", data=b_p)
        M = T.decl_buffer((O,), "int32", data=m_p)
        S = T.decl_buffer((O,), "int32", data=s_p)
        Y = T.decl_buffer((NY,), "int8", data=y_p)
        acc = T.alloc_buffer((1,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for oy, ox, oc in T.grid(OH, OW, O):
            acc[0] = B[oc]
            for ky, kx in T.grid(KH, KW):
                if padded:
                    if (0 <= oy * SH - PT + ky * DH < H) and (0 <= ox * SW - PL + kx * DW < W):
                        for ic in range(CG):
                            acc[0] = acc[0] + (T.Cast("int32", X[(oy * SH - PT + ky * DH) * XR + (ox * SW - PL
                                                                   + kx * DW) * XP + base(oc) + ic]) - in_zp) \
                                * T.Cast("int32", Wt[((oc * KH + ky) * KW + kx) * CG + ic])
                else:
                    for ic in range(CG):
                        acc[0] = acc[0] + (T.Cast("int32", X[(oy * SH + ky * DH) * XR + (ox * SW + kx * DW) * XP
                                                               + base(oc) + ic]) - in_zp) \
                            * T.Cast("int32", Wt[((oc * KH + ky) * KW + kx) * CG + ic])
            requantize_store(Y, oy * YR + ox * YP + oc, acc[0], M[oc], S[oc], t, out_zp, lo, hi)

    return kernel
