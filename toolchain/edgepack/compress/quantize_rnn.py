"""Quantization rules of the LSTM and GRU (issue 14 part B, item 12): TensorFlow Lite's integer LSTM
(reference/ops_rnn.py states the arithmetic), one handler per float op (:data:`HANDLERS`).

* input x: its own int8 scale and zero point (the zero point folded into the bias: - x_zp rowsum(W_x));
* hidden state h (and the op's output): int8 asymmetric per tensor, from the min / max of the hidden state
  over every step of the calibration batch (the float executor reports it as ``<output>#h``);
* weights: int8 symmetric, one scale per gate matrix (W_x and W_h of each gate; TFLite's LSTM is per tensor);
* gate pre-activations: int16 Q3.12 (scale 2^-12); requantization multipliers s_x s_wx / 2^-12 and
  s_h s_wh / 2^-12 (Q31 + shift); gate biases int32 at s_x s_wx (LSTM: b_ih + b_hh; GRU: the n gate's b_hh
  on the recurrent side at s_h s_wh, since r multiplies it);
* activations: Q0.15 (sigmoid, tanh through the 256-entry table);
* LSTM cell state: int16 with a power-of-two scale, Q3.12 when the calibrated |c| stays below 8, else Q4.11
  (TFLite's usual 2^-11; larger cells saturate at 16);
* hidden-state requantization 2^-30 / s_h.
"""

from __future__ import annotations

import numpy as np

from ..reference.arith import quantize_multiplier
from ..reference.ops_rnn import GATE_FRAC, SIGMOID_TABLE


def _gate_weights(w, in_scale):
    """(int8 weights, scale, Q31 multiplier, shift) of one gate matrix, per-tensor symmetric."""
    amax = float(np.abs(w).max())
    s = amax / 127.0 if amax > 0 else 1.0
    m, sh = quantize_multiplier(in_scale * s * 2.0 ** GATE_FRAC)
    return np.clip(np.round(w / s), -127, 127).astype(np.int8), s, m, sh


def lower_rnn(ctx, n):
    from .quantize import activation_qparams  # (quantize imports this module)

    g, q = ctx.g, ctx.q
    cell = n.op
    gates = 4 if cell == "lstm" else 3
    x = ctx.name_of(n.inputs[0])
    xq = ctx.qp[x]
    w_ih, w_hh, b_ih, b_hh = (g.const(t).astype(np.float64) for t in n.inputs[1:5])
    hidden = int(n.attrs["hidden"])
    out = n.outputs[0]
    hq = activation_qparams(*ctx.ranges[out + "#h"])
    ctx.add_act(out, g.tensors[out].shape, hq)
    wx, wh, bx, bh, mx, sx, mh, sh, wscale = ([] for _ in range(9))
    for k in range(gates):
        rows = slice(k * hidden, (k + 1) * hidden)
        qx, s_wx, m, s = _gate_weights(w_ih[rows], xq.scale)
        mx.append(m), sx.append(s)
        qh, s_wh, m, s = _gate_weights(w_hh[rows], hq.scale)
        mh.append(m), sh.append(s)
        on_h = cell == "gru" and k == 2  # r multiplies W_hn h + b_hn: its bias stays on the recurrent side
        bias_x = b_ih[rows] + (0 if on_h else b_hh[rows])
        bx.append(np.round(bias_x / (xq.scale * s_wx)) - xq.zero_point * qx.astype(np.int64).sum(1))
        bh.append((np.round(b_hh[rows] / (hq.scale * s_wh)) if on_h else 0)
                  - hq.zero_point * qh.astype(np.int64).sum(1))
        wx.append(qx), wh.append(qh), wscale.append((s_wx, s_wh))
    hm, hs = quantize_multiplier(2.0 ** -30 / hq.scale)
    attrs = dict(steps=int(g.tensors[n.inputs[0]].shape[1]), hidden=hidden, h_zp=hq.zero_point, h_mult=hm,
                 h_shift=hs, last=bool(n.attrs["last"]), w_scale=[list(s) for s in wscale],
                 gates="int16 Q3.12, sigmoid / tanh Q0.15 by a 256-entry table (TFLite int16 LUT activations)")
    if cell == "lstm":
        cmax = max(abs(v) for v in ctx.ranges[out + "#c"])
        attrs["cell_frac"] = 12 if cmax < 8.0 else 11
    clip = np.iinfo(np.int32)
    consts = [("wx", np.stack(wx)), ("wh", np.stack(wh)),
              ("bx", np.clip(np.stack(bx), clip.min, clip.max).astype(np.int32)),
              ("bh", np.clip(np.stack(bh) + np.zeros((gates, hidden)), clip.min, clip.max).astype(np.int32)),
              ("mx", np.array(mx, np.int32)), ("sx", np.array(sx, np.int32)), ("mh", np.array(mh, np.int32)),
              ("sh", np.array(sh, np.int32)), ("table", SIGMOID_TABLE)]
    ins = [x] + [q.add_const(f"{n.name}_{k}", v) for k, v in consts]
    q.add_node(f"{cell}_s8", n.name, ins, [out], **attrs)


HANDLERS = {"lstm": lower_rnn, "gru": lower_rnn}
