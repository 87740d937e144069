"""Integer LSTM and GRU, unrolled over a static sequence: the specification.

``lstm_s8`` is TensorFlow Lite's fully integer LSTM, the "8x8_16" kernel of TFLite Micro's
UNIDIRECTIONAL_SEQUENCE_LSTM (lstm_eval.cc: CalculateLstmGateInteger8x8_16, UpdateLstmCellInteger,
CalculateLstmOutputInteger8x8_16), without peepholes, projection, layer norm or clipping (PyTorch has none):

* int8 input x (zero point folded into the bias), int8 hidden state h with the output's scale and zero point,
  int8 weights with one symmetric scale per gate matrix (W_x and W_h of gates i, f, g, o: PyTorch's order);
* gate pre-activation in int16 Q3.12 (scale 2^-12): g = sat16(sat16(R(W_x x + b_x)) + R(W_h h + b_h)), R the
  TFLite requantization (Q31 multiplier s_x s_w / 2^-12 and shift) of the int32 product; b_x holds the float
  gate bias (b_ih + b_hh at scale s_x s_wx) minus x_zp * rowsum(W_x), b_h = -h_zp * rowsum(W_h);
* i, f, o = sigmoid16(g), the cell input gg = tanh16(g), all Q0.15 (:func:`sigmoid16`, :func:`tanh16`);
* int16 cell state c with scale 2^-11 (Q4.11) or 2^-12 (Q3.12), chosen from the calibrated range:
  c = sat16(RDBPOT(f c, 15) + sat16(RDBPOT(i gg, 30 - cell_frac)));
* h = sat8(R(o tanh16(c)) + h_zp), R with multiplier 2^-30 / s_h; tanh16 reads Q3.12, so a Q4.11 cell is
  shifted left by one first (TFLite's tanh input_left_shift = 1).

sigmoid16 / tanh16 are TFLite's int16 LUT activations (reference_integer_ops::Logistic / Tanh for int16, the
power-of-two-scale case): |3x| indexes a 256-entry table of sigmoid(i / 24) in Q0.16 with 9 (sigmoid) or 8
(tanh) fractional bits of linear interpolation, symmetric in sign. The one documented difference: the table is
edgepack's, round(65536 sigmoid(i / 24)) capped at 65535 (:data:`SIGMOID_TABLE`); TFLite ships a table whose
entries differ from that by at most one unit of 2^-16. The table is a const input of the op (weights.c), read by
the reference and the kernel alike.

``gru_s8`` has no TFLite counterpart (TFLite has no integer GRU); it follows the LSTM's conventions with
PyTorch's GRU (gates r, z, n; linear_before_reset, as torch and ONNX export it):

* r, z = sigmoid16(sat16(sat16(R(W_x x + b_x)) + R(W_h h + b_h))), b_x = b_ih + b_hh (x side) for r and z;
* nx = sat16(R(W_xn x + b_xn)), nh = sat16(R(W_hn h + b_hn)) (b_hn on the h side: r multiplies it),
  n = tanh16(sat16(nx + sat16(RDBPOT(r nh, 15))));
* h' = (1 - z) n + z h: h' = sat8(R((32768 - z) n) + RDBPOT(z (h - h_zp), 15) + h_zp), R with 2^-30 / s_h.

Inputs are (N, 1, F, T) int8 NHWC (the (N, T, F) sequence as (N, T, 1, F), H = 1): x_t[f] at f * T + t; the
sequence output likewise (N, 1, H, T), the last-step output (N, H).
"""

from __future__ import annotations

import numpy as np

from .arith import rdbpot, requantize

GATE_FRAC = 12  # gate pre-activations: int16 Q3.12
SIGMOID_TABLE = np.minimum(np.round(65536.0 / (1.0 + np.exp(-np.arange(256) / 24.0))), 65535).astype(np.int32)


def sat(x, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(x, lo, hi)


def sigmoid16(x, table=SIGMOID_TABLE):
    """int16 Q3.12 -> Q0.15 sigmoid (TFLite int16 Logistic, input multiplier 3, no shift)."""
    v = np.asarray(x, np.int64) * 3
    a = np.abs(v)
    uh = a >> 9
    t = np.asarray(table, np.int64)
    ua, ub = t[np.minimum(uh, 255)], t[np.minimum(uh + 1, 255)]
    r = np.where(uh >= 255, 0x7FFF << 10, (ua << 9) + (a & 0x1FF) * (ub - ua))
    r = np.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1)
    return r >> 10


def tanh16(x, left_shift=0, table=SIGMOID_TABLE):
    """int16 Q3.12 (Q4.11 with left_shift 1) -> Q0.15 tanh (TFLite int16 Tanh, input multiplier 0)."""
    v = np.asarray(x, np.int64) << left_shift
    a = 3 * np.abs(v)
    uh = a >> 8
    t = np.asarray(table, np.int64)
    ua, ub = t[np.minimum(uh, 255)], t[np.minimum(uh + 1, 255)]
    r = np.where(uh >= 255, 0xFFFF << 8, (ua << 8) + (a & 0xFF) * (ub - ua))
    r = np.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1)
    return r >> 8


def _gate(x, h, wx, wh, bx, bh, mx, sx, mh, sh):
    """sat16(sat16(R(W_x x + b_x)) + R(W_h h + b_h)) for one gate, batch first."""
    ax = x @ wx.T.astype(np.int64) + bx
    ah = h @ wh.T.astype(np.int64) + bh
    return sat(sat(requantize(ax, mx, sx), 16) + requantize(ah, mh, sh), 16)


def _sequence(x, steps):
    """(N, 1, F, T) int8 -> list of T (N, F) int64 steps."""
    x = np.asarray(x, np.int64)
    return [x[:, 0, :, t] for t in range(steps)]


def _emit(hs, last):
    if last:
        return hs[-1].astype(np.int8)
    return np.stack(hs, axis=-1)[:, None].astype(np.int8)  # (N, 1, H, T)


def lstm_s8(x, wx, wh, bx, bh, mx, sx, mh, sh, table, *, steps, hidden, cell_frac, h_zp, h_mult, h_shift,
            last, **_):
    n = x.shape[0]
    h = np.full((n, hidden), h_zp, np.int64)
    c = np.zeros((n, hidden), np.int64)
    hs = []
    for xt in _sequence(x, steps):
        g = [_gate(xt, h, wx[k], wh[k], bx[k], bh[k], mx[k], sx[k], mh[k], sh[k]) for k in range(4)]
        i, f, gg, o = sigmoid16(g[0], table), sigmoid16(g[1], table), tanh16(g[2], 0, table), sigmoid16(g[3], table)
        c = sat(sat(rdbpot(f * c, 15), 16) + sat(rdbpot(i * gg, 30 - cell_frac), 16), 16)
        th = tanh16(c, 1 if cell_frac == 11 else 0, table)
        h = sat(requantize(o * th, h_mult, h_shift) + h_zp, 8)
        hs.append(h)
    return _emit(hs, last)


def gru_s8(x, wx, wh, bx, bh, mx, sx, mh, sh, table, *, steps, hidden, h_zp, h_mult, h_shift, last, **_):
    n = x.shape[0]
    h = np.full((n, hidden), h_zp, np.int64)
    hs = []
    for xt in _sequence(x, steps):
        r = sigmoid16(_gate(xt, h, wx[0], wh[0], bx[0], bh[0], mx[0], sx[0], mh[0], sh[0]), table)
        z = sigmoid16(_gate(xt, h, wx[1], wh[1], bx[1], bh[1], mx[1], sx[1], mh[1], sh[1]), table)
        nx = sat(requantize(xt @ wx[2].T.astype(np.int64) + bx[2], mx[2], sx[2]), 16)
        nh = sat(requantize(h @ wh[2].T.astype(np.int64) + bh[2], mh[2], sh[2]), 16)
        nn = tanh16(sat(nx + sat(rdbpot(r * nh, 15), 16), 16), 0, table)
        h = sat(requantize((32768 - z) * nn, h_mult, h_shift) + rdbpot(z * (h - h_zp), 15) + h_zp, 8)
        hs.append(h)
    return _emit(hs, last)


OPS = {f.__name__: f for f in (lstm_s8, gru_s8)}
