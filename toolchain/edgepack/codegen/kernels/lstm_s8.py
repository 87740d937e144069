"""ep_lstm_s8: TFLite's integer (8x8_16) LSTM unrolled over the layer's static sequence (reference/ops_rnn.py).

Per step t: the four gates (PyTorch order i, f, g, o) as int16 Q3.12 from the int8 input x_t (read from the
(1, 1, F, T) NHWC sequence at f * T + t) and the int8 hidden state; sigmoid / tanh to Q0.15 through the 256-entry
table; the int16 cell update; h = sat8(R(o tanh(c)) + h_zp). The hidden state, cell and gates live in int32
scratch arrays (6 H + 8 words on the stack).
"""

from tvm.script import tirx as T

from .common import requantize_int32
from .rnn_common import gate_mv, rdbpot, sat, sigmoid16, tanh16

PARAMS = ["x", "wx", "wh", "bx", "bh", "mx", "sx", "mh", "sh", "table", "y"]
CONST = {"x", "wx", "wh", "bx", "bh", "mx", "sx", "mh", "sh", "table"}


def template(attrs, shapes):
    TS, H = int(attrs["steps"]), int(attrs["hidden"])
    F = shapes["wx"][2]
    CF = int(attrs["cell_frac"])
    LS = 1 if CF == 11 else 0
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
        WX = T.decl_buffer((4 * H * F,), "int8", data=wx)
        WH = T.decl_buffer((4 * H * H,), "int8", data=wh)
        BX = T.decl_buffer((4 * H,), "int32", data=bx)
        BH = T.decl_buffer((4 * H,), "int32", data=bh)
        MX = T.decl_buffer((4,), "int32", data=mx)
        SX = T.decl_buffer((4,), "int32", data=sx)
        MH = T.decl_buffer((4,), "int32", data=mh)
        SH = T.decl_buffer((4,), "int32", data=sh)
        TAB = T.decl_buffer((256,), "int32", data=table)
        Y = T.decl_buffer((NY,), "int8", data=y)
        hid = T.alloc_buffer((H,), "int32")
        cel = T.alloc_buffer((H,), "int32")
        gat = T.alloc_buffer((4 * H,), "int32")
        act = T.alloc_buffer((4,), "int32")  # i, f, g, o of one unit
        acc = T.alloc_buffer((2,), "int32")
        r = T.alloc_buffer((5,), "int32")
        u = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for j in range(H):
            hid[j] = hzp
            cel[j] = 0
        for ts in range(TS):
            for k, j in T.grid(4, H):
                gate_mv(gat, k, j, X, x_at_step(ts), F, WX, BX, MX, SX, acc, t, H, False)
                gate_mv(gat, k, j, hid, h_at, H, WH, BH, MH, SH, acc, t, H, True)
            for j in range(H):
                sigmoid16(act, 0, gat[j], r, TAB)
                sigmoid16(act, 1, gat[H + j], r, TAB)
                tanh16(act, 2, gat[2 * H + j], 0, r, TAB)
                sigmoid16(act, 3, gat[3 * H + j], r, TAB)
                u[0] = act[1] * cel[j]  # one product or rounding step per slot: nested Selects would blow up
                u[1] = rdbpot(u[0], 15)
                u[1] = sat(u[1], 16)
                u[2] = act[0] * act[2]
                u[3] = rdbpot(u[2], 30 - CF)
                u[3] = sat(u[3], 16)
                u[0] = u[1] + u[3]
                cel[j] = sat(u[0], 16)
                tanh16(act, 2, cel[j], LS, r, TAB)
                requantize_int32(hid, j, act[3] * act[2], hm, hs, t, hzp, -128, 127)
                if not last:
                    Y[j * TS + ts] = T.Cast("int8", hid[j])
        if last:
            for j in range(H):
                Y[j] = T.Cast("int8", hid[j])

    return kernel
