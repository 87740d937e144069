"""ep_gru_s8: the integer GRU of reference/ops_rnn.py (TFLite's LSTM conventions applied to PyTorch's GRU, gates
r, z, n with linear_before_reset) unrolled over the layer's static sequence.

Per step: r, z as int16 Q3.12 -> Q0.15 sigmoid; the n gate's input and recurrent halves kept apart (r scales the
recurrent half); n = tanh16(nx + r nh); h' = sat8(R((32768 - z) n) + RDBPOT(z (h - h_zp), 15) + h_zp).
"""

from tvm.script import tirx as T

from .common import requantize_int32
from .rnn_common import gate_mv, rdbpot, rnn_template, sat, sigmoid16, tanh16

PARAMS = ["x", "wx", "wh", "bx", "bh", "mx", "sx", "mh", "sh", "table", "y"]
CONST = {"x", "wx", "wh", "bx", "bh", "mx", "sx", "mh", "sh", "table"}


def _step(k):
    H, F, hzp, hm, hs = k["H"], k["F"], k["hzp"], k["hm"], k["hs"]
    x_at_step, h_at = k["x_at_step"], k["h_at"]

    @T.macro
    def step(ts, X, WX, WH, BX, BH, MX, SX, MH, SH, TAB, hid, cel, gat, act, acc, r, u, t):
        for g, j in T.grid(2, H):  # r, z: pre-activations in gat[0:2H]
            gate_mv(gat, g, j, X, x_at_step(ts), F, WX, BX, MX, SX, acc, t, H, False)
            gate_mv(gat, g, j, hid, h_at, H, WH, BH, MH, SH, acc, t, H, True)
        for j in range(H):  # n: the input half in gat[2H:3H], the recurrent half in gat[3H:4H]
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

    return step


def template(attrs, shapes):
    return rnn_template(attrs, shapes, 3, _step)
