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
