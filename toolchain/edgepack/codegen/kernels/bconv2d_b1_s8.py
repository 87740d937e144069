"""ep_bconv2d_b1_s8: binary (XNOR-popcount) NHWC convolution with int8 output.

x: (1, H, W, Cw) packed input, w: (O, KH, KW, Cw) packed weights (layout and tap loops as in bconv2d_b1);
bias, mult, shift: (O,) int32; y: (1, OH, OW, O) int8. For each output channel
acc = dot * 2^acc_shift + bias (in 64 bits, as the reference does), then the TFLite requantization of
``common.requantize_store`` with out_zp and the act_min / act_max clamp.
"""

from tvm.script import tirx as T

from .bconv2d_b1 import geometry, popsum_macros
from .common import requantize_store

PARAMS = ["x", "w", "bias", "mult", "shift", "y"]
CONST = {"x", "w", "bias", "mult", "shift"}


def template(attrs, shapes):
    g = geometry(attrs, shapes, "bconv2d_b1_s8")
    H, W, CW, O, KH, KW, OH, OW = (g[k] for k in ("H", "W", "CW", "O", "KH", "KW", "OH", "OW"))
    if shapes["y"][3] != O:
        raise ValueError(f"bconv2d_b1_s8: y has {shapes['y'][3]} channels, weights {O}")
    acc_shift = int(attrs["acc_shift"])
    if not 0 <= acc_shift <= 30:
        raise ValueError(f"bconv2d_b1_s8: acc_shift {acc_shift} out of [0, 30]")
    out_zp, lo, hi = attrs["out_zp"], attrs["act_min"], attrs["act_max"]
    count, popsum = popsum_macros(g)

    @T.prim_func
    def kernel(x: T.handle("uint32"), w: T.handle("uint32"), bias: T.handle("int32"), mult: T.handle("int32"),
               shift: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * CW,), "uint32", data=x)
        Wt = T.decl_buffer((O * KH * KW * CW,), "uint32", data=w)
        B = T.decl_buffer((O,), "int32", data=bias)
        M = T.decl_buffer((O,), "int32", data=mult)
        S = T.decl_buffer((O,), "int32", data=shift)
        Y = T.decl_buffer((OH * OW * O,), "int8", data=y)
        cnt = T.alloc_buffer((1,), "int32")
        pop = T.alloc_buffer((1,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for oy, ox in T.grid(OH, OW):
            count(cnt, oy, ox)
            for oc in range(O):
                popsum(X, Wt, pop, oy, ox, oc)
                requantize_store(Y, (oy * OW + ox) * O + oc,
                                 T.Cast("int64", cnt[0] - 2 * pop[0]) * T.int64(1 << acc_shift)
                                 + T.Cast("int64", B[oc]), M[oc], S[oc], t, out_zp, lo, hi)

    return kernel
