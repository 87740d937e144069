"""ep_gru_s8: the integer GRU of reference/ops_rnn.py (TFLite's LSTM conventions applied to PyTorch's GRU, gates
r, z, n with linear_before_reset) unrolled over the layer's static sequence.

Per step: r, z as int16 Q3.12 -> Q0.15 sigmoid; the n gate's input and recurrent halves kept apart (r scales the
recurrent half); n = tanh16(nx + r nh); h' = sat8(R((32768 - z) n) + RDBPOT(z (h - h_zp), 15) + h_zp).
"""

from tvm.script import tirx as T

from .common import requantize_int32
from .rnn_common import gate_mv, rdbpot, sat, sigmoid16, tanh16

PARAMS = ["x", "wx", "wh", "bx", "bh", "mx", "sx", "mh", "sh", "table", "y"]
CONST = {"x", "wx", "wh", "bx", "bh", "mx", "sx", "mh", "sh", "table"}


def template(attrs, shapes):
    TS, H = int(attrs["steps"]), int(attrs["hidden"])
    F = shapes["wx"][2]
    hzp, hm, hs = int(attrs["h_zp"]), int(attrs["h_mult"]), int(attrs["h_shift"])
    last = bool(attrs["last"])
    NY = H if last else H * TS

    def x_at_step(t):
        return lambda X, f: X[f * TS + t]

    def h_at(Hs, i):
        return Hs[i]

    @T.prim_func
    def kernel(x: T.handle("int8"), wx: T.handle("int8"), wh: T.handle("int8"), bx: T.handle("int32"),
               bh: T.handle("int32"), mx: T.handle("int32"), sx: T.handle("int32"), mh: T.handle("int32"),
               sh: T.handle("int32"), table: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((F * TS,), "int8", data=x)
        WX = T.decl_buffer((3 * H * F,), "int8", data=wx)
        WH = T.decl_buffer((3 * H * H,), "int8", data=wh)
        BX = T.decl_buffer((3 * H,), "int32", data=bx)
        BH = T.decl_buffer((3 * H,), "int32", data=bh)
        MX = T.decl_buffer((3,), "int32", data=mx)
        SX = T.decl_buffer((3,), "int32", data=sx)
        MH = T.decl_buffer((3,), "int32", data=mh)
        SH = T.decl_buffer((3,), "int32", data=sh)
        TAB = T.decl_buffer((256,), "int32", data=table)
        Y = T.decl_buffer((NY,), "int8", data=y)
        hid = T.alloc_buffer((H,), "int32")
        gat = T.alloc_buffer((4 * H,), "int32")  # r, z (pre-activations), nx, nh
        act = T.alloc_buffer((3,), "int32")  # r, z, n of one unit
        acc = T.alloc_buffer((2,), "int32")
        r = T.alloc_buffer((5,), "int32")
        u = T.alloc_buffer((3,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for j in range(H):
            hid[j] = hzp
        for ts in range(TS):
            for k, j in T.grid(2, H):
                gate_mv(gat, k, j, X, x_at_step(ts), F, WX, BX, MX, SX, acc, t, H, False)
                gate_mv(gat, k, j, hid, h_at, H, WH, BH, MH, SH, acc, t, H, True)
            for j in range(H):
                gate_mv(gat, 2, j, X, x_at_step(ts), F, WX, BX, MX, SX, acc, t, H, False)
                acc[0] = BH[2 * H + j]
                for i in range(H):
                    acc[0] = acc[0] + hid[i] * T.Cast("int32", WH[(2 * H + j) * H + i])
                requantize_int32(gat, 3 * H + j, acc[0], MH[2], SH[2], t, 0, -32768, 32767)
            for j in range(H):
                sigmoid16(act, 0, gat[j], r, TAB)
                sigmoid16(act, 1, gat[H + j], r, TAB)
                u[0] = act[0] * gat[3 * H + j]  # one product or rounding step per slot (see lstm_s8)
                u[1] = rdbpot(u[0], 15)
                u[1] = sat(u[1], 16)
                u[2] = gat[2 * H + j] + u[1]
                u[2] = sat(u[2], 16)
                tanh16(act, 2, u[2], 0, r, TAB)
                requantize_int32(acc, 0, (32768 - act[1]) * act[2], hm, hs, t, 0, -2147483648, 2147483647)
                u[0] = act[1] * (hid[j] - hzp)
                u[1] = rdbpot(u[0], 15)
                u[2] = acc[0] + u[1] + hzp
                hid[j] = sat(u[2], 8)
                if not last:
                    Y[j * TS + ts] = T.Cast("int8", hid[j])
        if last:
            for j in range(H):
                Y[j] = T.Cast("int8", hid[j])

    return kernel
