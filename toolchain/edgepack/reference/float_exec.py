"""Float numpy executor for the float dialect (NCHW), used for calibration and to check importers.

The graph's batch dimension of 1 is nominal: ``x`` may hold any batch N, and reshape targets keep dimension 0
as the batch. Arithmetic is float32 (matrix products through BLAS); convolution is im2col + matmul, depthwise
convolution a sum of shifted slices.
"""

from __future__ import annotations

import numpy as np

from ..errors import EdgepackError
from ..graph import Graph
from ..pointwise import BINARY, UNARY, apply

_DT = np.float32


def run_float(g: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``g`` on the batch ``x`` and return every activation (input included) by tensor name."""
    if len(g.inputs) != 1:
        raise EdgepackError(f"run_float: the graph has {len(g.inputs)} inputs; expected one")
    want = tuple(g.tensors[g.inputs[0]].shape)
    x = np.asarray(x, dtype=_DT)
    if x.ndim == len(want) - 1:
        x = x[None]
    if x.ndim != len(want) or tuple(x.shape[1:]) != want[1:]:
        raise EdgepackError(f"run_float: input of shape {tuple(x.shape)} does not match the model input "
                            f"(N,) + {want[1:]}")
    vals = {g.inputs[0]: x}
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
        vals[n.outputs[0]] = np.asarray(fn(n.attrs, *args), dtype=_DT)
    return vals


def run_float_output(g: Graph, x: np.ndarray) -> np.ndarray:
    """Run ``g`` on the batch ``x`` and return its output."""
    return run_float(g, x)[g.outputs[0]]


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


def _pool_geom(a, x):
    kh, kw = a["kernel"]
    sh, sw = a.get("strides") or a["kernel"]
    pads = a.get("pads", (0, 0, 0, 0))
    t, l, b, r = pads
    oh, ow = _out_size(x.shape[2] + t + b, kh, sh, 1), _out_size(x.shape[3] + l + r, kw, sw, 1)
    return kh, kw, sh, sw, pads, oh, ow


def _maxpool(a, x):
    kh, kw, sh, sw, pads, oh, ow = _pool_geom(a, x)
    xp = _pad(x, pads, -np.inf)
    y = None
    for _, _, win in _windows(xp, kh, kw, sh, sw, 1, 1, oh, ow):
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


_OPS = {
    "conv2d": _conv2d,
    "batchnorm": _batchnorm,
    "sign": lambda a, x: np.where(x >= 0, 1.0, -1.0).astype(x.dtype),
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
