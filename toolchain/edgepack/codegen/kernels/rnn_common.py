"""TIR pieces shared by the integer LSTM and GRU kernels (reference/ops_rnn.py): the gate matrix-vector products
with their int16 requantization, TFLite's int16 LUT sigmoid / tanh, and the rounding shift.

Every intermediate lives in a small int32 scratch the kernels allocate (gates, cell, hidden state: a few times
the hidden size), so the loops read only scratch slots and buffers; Select, never min/max (see common.py).
"""

from tvm.script import tirx as T

from .common import requantize_int32


def rdbpot(v, e):
    """Rounding divide of the int32 expression v by 2^e (constant e > 0), ties away from zero."""
    return (v >> e) + T.Select((v & ((1 << e) - 1)) > (((1 << e) - 1) >> 1) + T.Select(v < 0, 1, 0), 1, 0)


def sat(v, bits):
    """Saturate the int32 expression v to a signed ``bits``-bit range."""
    hi = (1 << (bits - 1)) - 1
    return T.Select(v > hi, hi, T.Select(v < -hi - 1, -hi - 1, v))


@T.macro
def gate_mv(G, k, j, X, x_at, n_in, W, B, M, S, acc, t, H, accumulate):
    """G[k H + j] = sat16((accumulate ? G[k H + j] : 0) + R(B[k H + j] + sum_i W[(k H + j) n_in + i] x_at(i))),
    R the requantization by M[k], S[k]."""
    acc[0] = B[k * H + j]
    for i in range(n_in):
        acc[0] = acc[0] + T.Cast("int32", x_at(X, i)) * T.Cast("int32", W[(k * H + j) * n_in + i])
    if accumulate:
        requantize_int32(acc, 1, acc[0], M[k], S[k], t, 0, -32768, 32767)
        G[k * H + j] = sat(G[k * H + j] + acc[1], 16)
    else:
        requantize_int32(G, k * H + j, acc[0], M[k], S[k], t, 0, -32768, 32767)


@T.macro
def sigmoid16(dst, di, v, r, TAB):
    """dst[di] = TFLite int16 Logistic of the Q3.12 value v (r: 5 int32 scratch slots, one per step)."""
    r[0] = v * 3
    r[1] = T.Select(r[0] < 0, 0 - r[0], r[0])  # |3v| < 2^17: index r[1] >> 9 <= 191
    r[2] = TAB[r[1] >> 9]
    r[3] = TAB[(r[1] >> 9) + 1]
    r[4] = (r[2] << 9) + (r[1] & 511) * (r[3] - r[2])
    dst[di] = T.Select(r[0] >= 0, r[4] + 512, 33554432 - r[4] + 511) >> 10


@T.macro
def tanh16(dst, di, v, shift, r, TAB):
    """dst[di] = TFLite int16 Tanh of v << shift (Q3.12 after the shift; r: 5 int32 scratch slots)."""
    r[0] = v << shift
    r[1] = 3 * T.Select(r[0] < 0, 0 - r[0], r[0])
    r[4] = T.Select((r[1] >> 8) > 254, 254, r[1] >> 8)
    r[2] = TAB[r[4]]
    r[3] = TAB[r[4] + 1]
    r[4] = T.Select((r[1] >> 8) >= 255, 16776960, (r[2] << 8) + (r[1] & 255) * (r[3] - r[2]))
    dst[di] = T.Select(r[0] >= 0, r[4] - 8388608 + 128, 8388608 - r[4] + 127) >> 8


def rnn_template(attrs, shapes, gates, make_step):
    """The PrimFunc shared by lstm_s8 and gru_s8: buffers, int32 scratch (hidden state, cell, gates, one unit's
    activations, accumulators), the zero initial state, the loop over the static sequence and the stores of the
    output; ``make_step(consts)`` returns the cell's T.macro for one step (see lstm_s8.py, gru_s8.py)."""
    TS, H = int(attrs["steps"]), int(attrs["hidden"])
    F = shapes["wx"][2]
    hzp = int(attrs["h_zp"])
    last = bool(attrs["last"])
    NY = H if last else H * TS
    step = make_step(dict(TS=TS, H=H, F=F, hzp=hzp, hm=int(attrs["h_mult"]), hs=int(attrs["h_shift"]),
                          CF=int(attrs.get("cell_frac", 12)), x_at_step=lambda t: (lambda X, f: X[f * TS + t]),
                          h_at=lambda Hs, i: Hs[i]))

    @T.prim_func
    def kernel(x: T.handle("int8"), wx: T.handle("int8"), wh: T.handle("int8"), bx: T.handle("int32"),
               bh: T.handle("int32"), mx: T.handle("int32"), sx: T.handle("int32"), mh: T.handle("int32"),
               sh: T.handle("int32"), table: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((F * TS,), "int8", data=x)
        WX = T.decl_buffer((gates * H * F,), "int8", data=wx)
        WH = T.decl_buffer((gates * H * H,), "int8", data=wh)
        BX = T.decl_buffer((gates * H,), "int32", data=bx)
        BH = T.decl_buffer((gates * H,), "int32", data=bh)
        MX = T.decl_buffer((gates,), "int32", data=mx)
        SX = T.decl_buffer((gates,), "int32", data=sx)
        MH = T.decl_buffer((gates,), "int32", data=mh)
        SH = T.decl_buffer((gates,), "int32", data=sh)
        TAB = T.decl_buffer((256,), "int32", data=table)
        Y = T.decl_buffer((NY,), "int8", data=y)
        hid = T.alloc_buffer((H,), "int32")
        if gates == 4:
            cel = T.alloc_buffer((H,), "int32")  # the LSTM's cell state
        else:
            cel = hid  # (the GRU has none)
        gat = T.alloc_buffer((4 * H,), "int32")
        act = T.alloc_buffer((4,), "int32")
        acc = T.alloc_buffer((2,), "int32")
        r = T.alloc_buffer((5,), "int32")
        u = T.alloc_buffer((4,), "int32")
        t = T.alloc_buffer((5,), "int64")
        for j in range(H):
            hid[j] = hzp
        if gates == 4:
            for j in range(H):
                cel[j] = 0
        for ts in range(TS):
            step(ts, X, WX, WH, BX, BH, MX, SX, MH, SH, TAB, hid, cel, gat, act, acc, r, u, t)
            if not last:
                for j in range(H):
                    Y[j * TS + ts] = T.Cast("int8", hid[j])
        if last:
            for j in range(H):
                Y[j] = T.Cast("int8", hid[j])

    return kernel
