"""ep_lstm_s8: TFLite's integer (8x8_16) LSTM unrolled over the layer's static sequence (reference/ops_rnn.py).

Per step t: the four gates (PyTorch order i, f, g, o) as int16 Q3.12 from the int8 input x_t (read from the
(1, 1, F, T) NHWC sequence at f * T + t) and the int8 hidden state; sigmoid / tanh to Q0.15 through the 256-entry
table; the int16 cell update; h = sat8(R(o tanh(c)) + h_zp). The hidden state, cell and gates live in int32
scratch arrays (rnn_common.rnn_template).
"""

from tvm.script import tirx as T

from .common import requantize_int32
from .rnn_common import gate_mv, rdbpot, rnn_template, sat, sigmoid16, tanh16

PARAMS = ["x", "wx", "wh", "bx", "bh", "mx", "sx", "mh", "sh", "table", "y"]
CONST = {"x", "wx", "wh", "bx", "bh", "mx", "sx", "mh", "sh", "table"}


def _step(k):
    H, F, CF, hzp, hm, hs = k["H"], k["F"], k["CF"], k["hzp"], k["hm"], k["hs"]
    LS = 1 if CF == 11 else 0  # a Q4.11 cell enters tanh (which reads Q3.12) shifted left by one
    x_at_step, h_at = k["x_at_step"], k["h_at"]

    @T.macro
    def step(ts, X, WX, WH, BX, BH, MX, SX, MH, SH, TAB, hid, cel, gat, act, acc, r, u, t):
        for g, j in T.grid(4, H):
            gate_mv(gat, g, j, X, x_at_step(ts), F, WX, BX, MX, SX, acc, t, H, False)
            gate_mv(gat, g, j, hid, h_at, H, WH, BH, MH, SH, acc, t, H, True)
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

    return step


def template(attrs, shapes):
    return rnn_template(attrs, shapes, 4, _step)
