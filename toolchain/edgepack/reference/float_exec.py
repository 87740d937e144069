"""Float numpy executor for the float dialect (NCHW), used for calibration and to check importers.

The graph's batch dimension of 1 is nominal: ``x`` may hold any batch N, and reshape targets keep dimension 0
as the batch. ``x`` is in the model's own layout (``graph.model_to_graph``: e.g. (N, C, L) for a Conv1d model,
whose graph carries (N, C, 1, L)); the activations returned are in the graph's layout, the output of
:func:`run_float_output` in the model's. Arithmetic is float32 (matrix products through BLAS); convolution is
im2col + matmul, depthwise convolution a sum of shifted slices; resize follows the framework's float
definition (the integer kernels follow TFLite's, see reference/ops_spatial.py).
"""

from __future__ import annotations

import numpy as np

from ..errors import EdgepackError
from ..graph import Graph, graph_to_model, io_spec, model_batch_axis, model_to_graph
from ..pointwise import BINARY, UNARY, apply

_DT = np.float32


def run_float(g: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``g`` on the batch ``x`` and return every activation (input included) by tensor name."""
    if len(g.inputs) != 1:
        raise EdgepackError(f"run_float: the graph has {len(g.inputs)} inputs; expected one")
    gshape = tuple(g.tensors[g.inputs[0]].shape)
    want, b = io_spec(g.meta, "input", gshape)[0], model_batch_axis(g.meta, "input", gshape)
    x = np.asarray(x, dtype=_DT)
    if x.ndim == len(want) - 1:
        x = np.expand_dims(x, b)
    rest = [d for i, d in enumerate(want) if i != b]
    if x.ndim != len(want) or [d for i, d in enumerate(x.shape) if i != b] != rest:
        raise EdgepackError(f"run_float: input of shape {tuple(x.shape)} does not match the model input "
                            f"{want} (any batch at axis {b})")
    vals = {g.inputs[0]: model_to_graph(g.meta, "input", gshape, x)}
    for n in g.nodes:
        fn = _OPS.get(n.op)
        if fn is None:
            raise EdgepackError(f"run_float: node '{n.name}': operator '{n.op}' is not a float-dialect op")
        args = []
        for t in n.inputs:
            if t in vals:
                args.append(vals[t])
            else:
                data = g.tensors[t].data
                if data is None:
                    raise EdgepackError(f"run_float: node '{n.name}': input '{t}' has not been computed")
                args.append(np.asarray(data, dtype=_DT))
        y = fn(n.attrs, *args)
        if isinstance(y, tuple):  # RNNs: also their hidden / cell state over all steps, for calibration
            y, states = y
            vals.update({f"{n.outputs[0]}#{k}": np.asarray(v, dtype=_DT) for k, v in states.items()})
        vals[n.outputs[0]] = np.asarray(y, dtype=_DT)
    return vals


def run_float_output(g: Graph, x: np.ndarray) -> np.ndarray:
    """Run ``g`` on the batch ``x`` and return its output, in the model's layout."""
    y = run_float(g, x)[g.outputs[0]]
    return graph_to_model(g.meta, "output", g.tensors[g.outputs[0]].shape, y)


# ---- ops ------------------------------------------------------------------------------------------------
def _pad(x, pads, value):
    t, l, b, r = pads
    if not (t or l or b or r):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def _out_size(size, k, s, d):
    return (size - d * (k - 1) - 1) // s + 1


def _windows(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    """Yield (i, j, slice of shape (N, C, OH, OW)) for every kernel tap."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]


def _conv2d(a, x, w, b=None):
    (sh, sw), (dh, dw), group = a.get("strides", (1, 1)), a.get("dilations", (1, 1)), a.get("group", 1)
    xp = _pad(x, a.get("pads", (0, 0, 0, 0)), 0.0)
    n, c, hp, wp = xp.shape
    o, cg, kh, kw = w.shape
    oh, ow = _out_size(hp, kh, sh, dh), _out_size(wp, kw, sw, dw)
    if cg == 1 and group == c:  # depthwise (channel multiplier m = o // c)
        m = o // c
        xr = np.repeat(xp, m, axis=1) if m > 1 else xp
        y = np.zeros((n, o, oh, ow), dtype=_DT)
        for i, j, win in _windows(xr, kh, kw, sh, sw, dh, dw, oh, ow):
            y += win * w[None, :, 0, i, j, None, None]
    else:
        cols = np.empty((n, c, kh, kw, oh, ow), dtype=_DT)
        for i, j, win in _windows(xp, kh, kw, sh, sw, dh, dw, oh, ow):
            cols[:, :, i, j] = win
        cols = cols.reshape(n, group, cg * kh * kw, oh * ow)
        wm = w.reshape(group, o // group, cg * kh * kw)
        y = np.matmul(wm[None], cols).reshape(n, o, oh, ow)
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def _conv_transpose2d(a, x, w, b=None):
    """y[o, F - pt] = sum over i, taps with F = iy*s + k*d of x[i, iy] * w[i, o, k] (scatter of each tap's
    contribution, then crop the full output by the pads; output_padding extends the bottom / right)."""
    (sh, sw), (pt, pl, pb, pr), (oph, opw), (dh, dw) = (a["strides"], a["pads"], a["output_padding"],
                                                        a["dilations"])
    group = a.get("group", 1)
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    oh = (h - 1) * sh - pt - pb + dh * (kh - 1) + 1 + oph
    ow = (wd - 1) * sw - pl - pr + dw * (kw - 1) + 1 + opw
    full = np.zeros((n, og * group, max((h - 1) * sh + dh * (kh - 1) + 1, pt + oh),
                     max((wd - 1) * sw + dw * (kw - 1) + 1, pl + ow)), dtype=np.float64)
    cg = c // group
    for gi in range(group):
        xs = x[:, gi * cg:(gi + 1) * cg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nchw,co->nohw", xs, w[gi * cg:(gi + 1) * cg, :, i, j].astype(np.float64))
                full[:, gi * og:(gi + 1) * og, i * dh: i * dh + (h - 1) * sh + 1: sh,
                     j * dw: j * dw + (wd - 1) * sw + 1: sw] += contrib
    y = full[:, :, pt:pt + oh, pl:pl + ow]
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def _pool_geom(a, x):
    kh, kw = a["kernel"]
    sh, sw = a.get("strides") or a["kernel"]
    pads = a.get("pads", (0, 0, 0, 0))
    dh, dw = a.get("dilations", (1, 1))
    t, l, b, r = pads
    oh, ow = _out_size(x.shape[2] + t + b, kh, sh, dh), _out_size(x.shape[3] + l + r, kw, sw, dw)
    return kh, kw, sh, sw, pads, oh, ow


def _maxpool(a, x):
    kh, kw, sh, sw, pads, oh, ow = _pool_geom(a, x)
    dh, dw = a.get("dilations", (1, 1))
    xp = _pad(x, pads, -np.inf)
    y = None
    for _, _, win in _windows(xp, kh, kw, sh, sw, dh, dw, oh, ow):
        y = win.copy() if y is None else np.maximum(y, win)
    return y


def _avgpool(a, x):
    kh, kw, sh, sw, pads, oh, ow = _pool_geom(a, x)
    xp = _pad(x, pads, 0.0)
    y = np.zeros(x.shape[:2] + (oh, ow), dtype=_DT)
    for _, _, win in _windows(xp, kh, kw, sh, sw, 1, 1, oh, ow):
        y += win
    if a.get("count_include_pad", True) or not any(pads):
        return y / (kh * kw)
    ones = _pad(np.ones((1, 1) + x.shape[2:], dtype=_DT), pads, 0.0)
    cnt = np.zeros((1, 1, oh, ow), dtype=_DT)
    for _, _, win in _windows(ones, kh, kw, sh, sw, 1, 1, oh, ow):
        cnt += win
    return y / cnt


def _batchnorm(a, x, gamma, beta, mean, var):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    s = gamma / np.sqrt(var + a.get("eps", 1e-5))
    return (x - mean.reshape(shape)) * s.reshape(shape) + beta.reshape(shape)


def _flatten(a, x):
    ax = a.get("axis", 1) % x.ndim
    return x.reshape(x.shape[:ax] + (-1,))


def _reshape(a, x):
    shape = tuple(a["shape"])
    return x.reshape((x.shape[0],) + shape[1:])


def _channel_shuffle(a, x):
    g = a["groups"]
    n, c = x.shape[:2]
    return x.reshape((n, g, c // g) + x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


def resize_source(out_size: int, in_size: int, coord: str, scale=None) -> np.ndarray:
    """The input coordinate (float64) each output index maps to under ONNX's / PyTorch's coordinate transform;
    ``scale`` = out / in unless the model gave its own scale factor."""
    o = np.arange(out_size, dtype=np.float64)
    s = float(scale) if scale else out_size / in_size
    if coord == "align_corners":
        return o * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size)
    if coord == "asymmetric":
        return o / s
    if coord == "pytorch_half_pixel" and out_size == 1:
        return np.zeros(1)
    return (o + 0.5) / s - 0.5  # half_pixel


def nearest_indices(out_size, in_size, coord, rounding, scale=None) -> np.ndarray:
    """Input index of each output index for nearest resize, the framework's definition."""
    src = resize_source(out_size, in_size, coord, scale)
    r = {"floor": np.floor, "ceil": np.ceil, "round_prefer_floor": lambda v: np.ceil(v - 0.5),
         "round_prefer_ceil": lambda v: np.floor(v + 0.5)}[rounding](src)
    return np.clip(r, 0, in_size - 1).astype(np.int64)


def _resize(a, x):
    n, c, h, w = x.shape
    oh, ow = a["size"]
    sh, sw = a.get("scales") or (None, None)
    if a["mode"] == "nearest":
        iy = nearest_indices(oh, h, a["coord"], a["nearest"], sh)
        ix = nearest_indices(ow, w, a["coord"], a["nearest"], sw)
        return x[:, :, iy][:, :, :, ix]
    ys = np.maximum(resize_source(oh, h, a["coord"], sh), 0.0)  # PyTorch clamps negative sources to 0
    xs = np.maximum(resize_source(ow, w, a["coord"], sw), 0.0)
    y0 = np.minimum(np.floor(ys).astype(np.int64), h - 1)
    x0 = np.minimum(np.floor(xs).astype(np.int64), w - 1)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    xd = x.astype(np.float64)
    top = xd[:, :, y0][:, :, :, x0] * (1 - fx) + xd[:, :, y0][:, :, :, x1] * fx
    bot = xd[:, :, y1][:, :, :, x0] * (1 - fx) + xd[:, :, y1][:, :, :, x1] * fx
    return top * (1 - fy) + bot * fy


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _rnn(a, x, w_ih, w_hh, b_ih, b_hh, cell):
    """Run an LSTM / GRU over x (N, T, 1, F); returns (output, {"h": all h_t, "c": all c_t (LSTM)})."""
    n, steps = x.shape[:2]
    hsz = a["hidden"]
    h = np.zeros((n, hsz), np.float64)
    c = np.zeros((n, hsz), np.float64)
    hs, cs = [], []
    for t in range(steps):
        gx = x[:, t, 0].astype(np.float64) @ w_ih.T.astype(np.float64) + b_ih
        gh = h @ w_hh.T.astype(np.float64) + b_hh
        if cell == "lstm":
            i, f, g, o = np.split(gx + gh, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            cs.append(c)
        else:
            xr, xz, xn = np.split(gx, 3, axis=1)
            hr, hz, hn = np.split(gh, 3, axis=1)
            r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
            h = (1 - z) * np.tanh(xn + r * hn) + z * h
        hs.append(h)
    states = {"h": np.stack(hs, 1)} | ({"c": np.stack(cs, 1)} if cs else {})
    return (h if a["last"] else np.stack(hs, 1)[:, :, None, :]), states


def _dense(a, x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def _concat(a, *xs):
    return np.concatenate(xs, axis=a["axis"])


def _slice(a, x):
    idx = [slice(None)] * x.ndim
    idx[a["axis"]] = slice(a["start"], a["end"], a.get("step", 1))
    return x[tuple(idx)]


def _pad_const(a, x):
    t, l, b, r = a.get("pads", (0, 0, 0, 0))
    cf, cb = a.get("channel_pads", (0, 0))
    return np.pad(x, ((0, 0), (cf, cb), (t, b), (l, r)), constant_values=a.get("value", 0.0))


def _prelu(a, x, slope):
    shape = (1, -1) + (1,) * (x.ndim - 2) if slope.size > 1 else ()
    return np.where(x >= 0, x, x * slope.reshape(shape))


def _softmax(a, x):
    ax = a.get("axis", -1)
    e = np.exp(x - x.max(axis=ax, keepdims=True))
    return e / e.sum(axis=ax, keepdims=True)


def _sign(a, x, t=None):
    """sign(x - t) with sign(0) = +1: +1 where x >= t (t per channel, axis 1; 0 without it)."""
    if t is not None:
        t = np.asarray(t, x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))
        return np.where(x >= t, 1.0, -1.0).astype(x.dtype)
    return np.where(x >= 0, 1.0, -1.0).astype(x.dtype)


_OPS = {
    "conv2d": _conv2d,
    "conv_transpose2d": _conv_transpose2d,
    "transpose": lambda a, x: x.transpose(a["perm"]),
    "channel_shuffle": _channel_shuffle,
    "resize": _resize,
    "lstm": lambda a, *args: _rnn(a, *args, cell="lstm"),
    "gru": lambda a, *args: _rnn(a, *args, cell="gru"),
    "batchnorm": _batchnorm,
    "sign": _sign,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "global_avgpool": lambda a, x: x.mean(axis=(2, 3), keepdims=True),
    **{op: (lambda f: lambda a, *xs: f(*xs))(f) for op, f in BINARY.items()},
    "sum": lambda a, *xs: np.sum(np.broadcast_arrays(*xs), axis=0),
    "concat": _concat,
    "slice": _slice,
    "pad": _pad_const,
    "prelu": _prelu,
    "flatten": _flatten,
    "reshape": _reshape,
    "dense": _dense,
    "softmax": _softmax,
}
_OPS.update({op: (lambda op: lambda a, x: apply(op, x, a))(op) for op in UNARY if op not in _OPS})
