"""The one graph IR that every stage after the frontend reads.

A :class:`Graph` is a list of :class:`Node` in execution order over named :class:`Tensor` s.
Constants (weights, biases, multipliers) are tensors with ``data``; activations have ``data=None``.

Two dialects live in the same IR, one after the other in the pipeline:

* the *float* dialect, written by the frontends, in the framework's own NCHW layout and semantics
  (ops ``conv2d, conv_transpose2d, batchnorm, relu, sign, clip, maxpool, avgpool, global_avgpool, add, sub, mul,
  sum, concat, slice, pad, prelu, flatten, reshape, transpose, channel_shuffle, resize, dense, softmax`` (and the
  RNNs ``lstm``, ``gru``) and the element-wise functions of
  :data:`edgepack.pointwise.UNARY` (sigmoid, tanh, hardswish, ...); see :data:`FLOAT_OPS` for inputs and
  attributes; binary element-wise ops broadcast as numpy does);
* the *integer* dialect, written by :mod:`edgepack.compress.quantize`, in NHWC layout, int8 activations with
  ``quant`` parameters (ops ``conv2d_s8, dwconv2d_s8, dense_s8, maxpool_s8, avgpool_s8, add_s8, mul_s8,
  lut_s8, prelu_s8, concat_s8, slice_s8, pad_s8, clamp_s8, softmax_s8, reshape``; see
  :mod:`edgepack.reference.ops` for their arithmetic).

Batch convention: dimension 0 of every activation is the batch; graphs carry the nominal batch 1 and the
executors run any batch N (reshape targets keep dimension 0 as the batch).

Rank-3 tensors (N, C, L) of the framework (Conv1d, MaxPool1d, AvgPool1d, BatchNorm1d) are carried as 4-D
(N, C, 1, L): one IR, the 1-D ops are the 2-D ones with H = 1 (the element order is the same, so a rank-3
tensor and its 4-D form are one reshape apart). The model's own input and output layouts are remembered at
the boundary, in ``meta["io"]`` (see :func:`model_to_graph`): the rank, and a permutation folded out of the
graph (a model that takes NHWC and permutes it to NCHW first; a sequence model whose batch is not axis 0).

Shapes are inferred here, once, for the float dialect (:func:`infer_shapes`), so both frontends share it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgepackError
from .pointwise import BINARY, UNARY


@dataclass
class QParams:
    """Affine quantization: real = scale * (q - zero_point). ``scale`` is a float or a per-channel array."""

    scale: object
    zero_point: int = 0
    axis: int | None = None  # channel axis for per-channel scales

    def to_json(self):
        s = self.scale
        return {"scale": np.asarray(s, dtype=np.float64).tolist(), "zero_point": int(self.zero_point),
                "axis": self.axis}

    @staticmethod
    def from_json(d):
        s = d["scale"]
        return QParams(np.asarray(s, dtype=np.float64) if isinstance(s, list) else float(s),
                       int(d["zero_point"]), d["axis"])


@dataclass
class Tensor:
    name: str
    shape: tuple
    dtype: str = "float32"
    data: np.ndarray | None = None
    quant: QParams | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    op: str
    name: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)


class Graph:
    def __init__(self):
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.meta: dict = {}

    # ---- construction -------------------------------------------------------------------------------
    def add_tensor(self, name, shape=None, dtype="float32", data=None, quant=None) -> str:
        if data is not None:
            data = np.ascontiguousarray(data)
            shape = tuple(data.shape)
            dtype = str(data.dtype)
        self.tensors[name] = Tensor(name, tuple(shape) if shape is not None else None, dtype, data, quant)
        return name

    def add_const(self, name, data) -> str:
        return self.add_tensor(name, data=np.asarray(data))

    def add_node(self, op, name, inputs, outputs, **attrs) -> Node:
        for t in outputs:
            if t not in self.tensors:
                self.add_tensor(t)
        node = Node(op, name, list(inputs), list(outputs), dict(attrs))
        self.nodes.append(node)
        return node

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.tensors:
            i += 1
            name = f"{base}_{i}"
        return name

    # ---- queries ------------------------------------------------------------------------------------
    def producer(self, tensor: str):
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str):
        return [n for n in self.nodes if tensor in n.inputs]

    def const(self, name):
        return self.tensors[name].data if name in self.tensors else None

    def activations(self):
        return [t for t in self.tensors.values() if t.data is None]

    def prune_unused(self):
        used = set(self.inputs) | set(self.outputs)
        for n in self.nodes:
            used.update(n.inputs)
            used.update(n.outputs)
        self.tensors = {k: v for k, v in self.tensors.items() if k in used}

    def replace_uses(self, old: str, new: str):
        for n in self.nodes:
            n.inputs = [new if t == old else t for t in n.inputs]
        self.outputs = [new if t == old else t for t in self.outputs]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for n in self.nodes:
            h.update(json.dumps([n.op, n.inputs, n.outputs, _jsonable(n.attrs)], sort_keys=True).encode())
        for k in sorted(self.tensors):
            t = self.tensors[k]
            if t.data is not None:
                h.update(k.encode())
                h.update(t.data.tobytes())
        return h.hexdigest()

    # ---- serialisation (OUT/graph.json + OUT/graph.npz) ----------------------------------------------
    def save(self, folder: Path, stem: str = "graph"):
        folder = Path(folder)
        consts = {k: t.data for k, t in self.tensors.items() if t.data is not None}
        keys = {k: f"c{i}" for i, k in enumerate(sorted(consts))}
        np.savez(folder / f"{stem}.npz", **{keys[k]: v for k, v in consts.items()})
        doc = {
            "inputs": self.inputs, "outputs": self.outputs, "meta": _jsonable(self.meta),
            "tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
                         "const": keys.get(t.name), "quant": t.quant.to_json() if t.quant else None}
                        for t in self.tensors.values()],
            "nodes": [{"op": n.op, "name": n.name, "inputs": n.inputs, "outputs": n.outputs,
                       "attrs": _jsonable(n.attrs)} for n in self.nodes],
        }
        (folder / f"{stem}.json").write_text(json.dumps(doc, indent=1))

    @staticmethod
    def load(folder: Path, stem: str = "graph") -> "Graph":
        folder = Path(folder)
        doc = json.loads((folder / f"{stem}.json").read_text())
        arrays = np.load(folder / f"{stem}.npz")
        g = Graph()
        g.inputs, g.outputs, g.meta = doc["inputs"], doc["outputs"], doc["meta"]
        for t in doc["tensors"]:
            data = arrays[t["const"]] if t["const"] else None
            g.tensors[t["name"]] = Tensor(t["name"], tuple(t["shape"]), t["dtype"], data,
                                          QParams.from_json(t["quant"]) if t["quant"] else None)
        for n in doc["nodes"]:
            g.nodes.append(Node(n["op"], n["name"], n["inputs"], n["outputs"], n["attrs"]))
        return g

    def __repr__(self):
        lines = [f"Graph(inputs={self.inputs}, outputs={self.outputs})"]
        for n in self.nodes:
            shapes = [self.tensors[t].shape for t in n.outputs]
            lines.append(f"  {n.name}: {n.op}({', '.join(n.inputs)}) -> {n.outputs} {shapes} {n.attrs}")
        return "\n".join(lines)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


# ---- the float dialect ---------------------------------------------------------------------------------
# op -> (input names, attributes with defaults). Inputs in brackets are optional.
FLOAT_OPS = {
    "conv2d": (["x", "w (O, I/group, KH, KW)", "[b (O)]"],
               {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1}),
    "batchnorm": (["x", "gamma", "beta", "mean", "var"], {"eps": 1e-5}),
    "relu": (["x"], {}),
    # binary activation: +1 where x >= t, else -1 (sign(x - t), sign(0) is +1, unlike torch.sign); t: an optional
    # constant threshold per channel (axis 1; (C,) after the frontend), 0 without it
    "sign": (["x", "[t (C)]"], {}),
    "clip": (["x"], {"min": None, "max": None}),
    "conv_transpose2d": (["x", "w (I, O/group, KH, KW)", "[b (O)]"],
                         {"strides": (1, 1), "pads": (0, 0, 0, 0), "output_padding": (0, 0), "dilations": (1, 1),
                          "group": 1}),  # pads crop the full output: (top, left, bottom, right), as ONNX
    "maxpool": (["x"], {"kernel": None, "strides": None, "pads": (0, 0, 0, 0), "dilations": (1, 1)}),
    "avgpool": (["x"], {"kernel": None, "strides": None, "pads": (0, 0, 0, 0), "count_include_pad": True}),
    "global_avgpool": (["x"], {}),
    "add": (["a", "b"], {}),  # either may be a constant; broadcasting
    "sub": (["a", "b"], {}),
    "mul": (["a", "b"], {}),
    "sum": (["x1", "x2", "..."], {}),  # n-ary add (ONNX Sum)
    "concat": (["x1", "x2", "..."], {"axis": 1}),
    "slice": (["x"], {"axis": 1, "start": 0, "end": None, "step": 1}),  # x[start:end:step] along axis
    "pad": (["x"], {"pads": (0, 0, 0, 0), "channel_pads": (0, 0), "value": 0.0}),  # constant pad of H, W (and C)
    "prelu": (["x", "slope (C)"], {}),
    "flatten": (["x"], {"axis": 1}),
    "reshape": (["x"], {"shape": None}),
    "transpose": (["x"], {"perm": None}),  # y = x.transpose(perm); perm[0] == 0 (the batch stays first)
    "channel_shuffle": (["x"], {"groups": None}),  # y[:, j*g + i] = x[:, i*(C/g) + j] (ShuffleNet)
    # y = x sampled at (OH, OW) = size; mode nearest | bilinear; coord: how an output index maps to the input,
    # asymmetric (o / scale), half_pixel ((o + 0.5) / scale - 0.5), pytorch_half_pixel (half_pixel, 0 when
    # the output has size 1), align_corners (o * (in - 1) / (out - 1)); nearest: how nearest rounds
    # (floor, ceil, round_prefer_floor, round_prefer_ceil); scale = out / in unless ``scales`` says otherwise
    "resize": (["x"], {"mode": "nearest", "size": None, "coord": "asymmetric", "nearest": "floor",
                       "scales": None}),
    "dense": (["x", "w (O, I)", "[b (O)]"], {}),
    # single-layer unidirectional RNNs over a (N, T, F) sequence carried as (N, T, 1, F), zero initial state,
    # PyTorch's gate order (LSTM i, f, g, o; GRU r, z, n, linear_before_reset); output the hidden state of every
    # step (N, T, 1, H) or, with last, of the last step (N, H)
    "lstm": (["x", "w_ih (4H, F)", "w_hh (4H, H)", "b_ih (4H)", "b_hh (4H)"], {"hidden": None, "last": False}),
    "gru": (["x", "w_ih (3H, F)", "w_hh (3H, H)", "b_ih (3H)", "b_hh (3H)"], {"hidden": None, "last": False}),
    "softmax": (["x"], {"axis": -1}),
}
FLOAT_OPS.update({op: (["x"], dict(defaults)) for op, (_, defaults, _) in UNARY.items() if op not in FLOAT_OPS})
FLOAT_OPS.update({op: (["c", "a", "b"] if op == "where" else ["a", "b"], {}) for op in BINARY if op not in FLOAT_OPS})
ELEMENTWISE_BINARY = tuple(BINARY)
# pads are (top, left, bottom, right) everywhere.


RESIZE_COORDS = ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners")


def _conv_out(size, k, s, p0, p1, d=1):
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def per_channel_shape(shape, x) -> bool:
    """Whether a constant of ``shape`` broadcasts (numpy rules) against an activation of shape ``x`` as one value
    per channel (axis 1) or one value for all."""
    shape, x = tuple(shape), tuple(x)
    if len(shape) > len(x):
        return False
    full = (1,) * (len(x) - len(shape)) + shape
    return all(d == 1 or (i == 1 and d == x[1]) for i, d in enumerate(full))


def infer_shapes(g: Graph, source: str = "model"):
    """Fill in the shape of every activation of a float-dialect graph, checking each op's inputs."""
    for n in g.nodes:
        if n.op not in FLOAT_OPS:
            raise EdgepackError(f"{source}: node '{n.name}': operator '{n.op}' is not supported")
        spec_attrs = FLOAT_OPS[n.op][1]
        for k, v in spec_attrs.items():
            n.attrs.setdefault(k, v)
        shp = [g.tensors[t].shape for t in n.inputs]
        x = shp[0]
        if x is None:
            raise EdgepackError(f"{source}: node '{n.name}' ({n.op}): input shape unknown")
        a = n.attrs

        def need4():
            if len(x) != 4:
                raise EdgepackError(f"{source}: node '{n.name}' ({n.op}): expects a 4-D NCHW input, got {x}")

        if n.op == "conv2d":
            need4()
            w = shp[1]
            if len(w) != 4:
                raise EdgepackError(f"{source}: node '{n.name}' (conv2d): only 2-D convolution is supported")
            if x[1] != w[1] * a["group"]:
                raise EdgepackError(f"{source}: node '{n.name}' (conv2d): input has {x[1]} channels, weight "
                                    f"expects {w[1] * a['group']}")
            (sh, sw), (pt, pl, pb, pr), (dh, dw) = a["strides"], a["pads"], a["dilations"]
            out = (x[0], w[0], _conv_out(x[2], w[2], sh, pt, pb, dh), _conv_out(x[3], w[3], sw, pl, pr, dw))
        elif n.op == "conv_transpose2d":
            need4()
            w = shp[1]
            if len(w) != 4 or x[1] != w[0]:
                raise EdgepackError(f"{source}: node '{n.name}' (conv_transpose2d): input has {x[1]} channels, "
                                    f"weight {w} expects {w[0] if len(w) == 4 else '?'}")
            (sh, sw), (pt, pl, pb, pr), (oph, opw), (dh, dw) = (a["strides"], a["pads"], a["output_padding"],
                                                                a["dilations"])
            out = (x[0], w[1] * a["group"], (x[2] - 1) * sh - pt - pb + dh * (w[2] - 1) + 1 + oph,
                   (x[3] - 1) * sw - pl - pr + dw * (w[3] - 1) + 1 + opw)
            if min(out[2:]) < 1:
                raise EdgepackError(f"{source}: node '{n.name}' (conv_transpose2d): output size {out} is empty")
        elif n.op in ("maxpool", "avgpool"):
            need4()
            kh, kw = a["kernel"]
            sh, sw = a["strides"] or a["kernel"]
            a["strides"] = (sh, sw)
            pt, pl, pb, pr = a["pads"]
            dh, dw = a.get("dilations", (1, 1))
            out = (x[0], x[1], _conv_out(x[2], kh, sh, pt, pb, dh), _conv_out(x[3], kw, sw, pl, pr, dw))
        elif n.op == "global_avgpool":
            need4()
            out = (x[0], x[1], 1, 1)
        elif n.op in ELEMENTWISE_BINARY or n.op == "sum":
            try:
                out = np.broadcast_shapes(*[tuple(s) for s in shp])
            except ValueError:
                raise EdgepackError(f"{source}: node '{n.name}' ({n.op}): shapes "
                                    f"{', '.join(str(tuple(s)) for s in shp)} do not broadcast") from None
            acts = [s for t, s in zip(n.inputs, shp) if not g.tensors[t].is_const]
            if not acts:
                raise EdgepackError(f"{source}: node '{n.name}' ({n.op}): all inputs are constants")
            if any(len(out) != len(v) for v in acts) or out[0] != 1:
                raise EdgepackError(f"{source}: node '{n.name}' ({n.op}): broadcasting to {out} changes the rank "
                                    "or the batch of an activation input")
        elif n.op == "concat":
            if any(g.tensors[t].is_const for t in n.inputs):
                raise EdgepackError(f"{source}: node '{n.name}' (concat): a constant input is not supported; "
                                    "concatenate activations only")
            ax = a["axis"] % len(x)
            if ax == 0:
                raise EdgepackError(f"{source}: node '{n.name}' (concat): concatenation along the batch "
                                    "dimension is not supported")
            for s in shp[1:]:
                if len(s) != len(x) or any(u != v for i, (u, v) in enumerate(zip(s, x)) if i != ax):
                    raise EdgepackError(f"{source}: node '{n.name}' (concat): shapes "
                                        f"{', '.join(str(tuple(v)) for v in shp)} differ outside axis {ax}")
            a["axis"] = ax
            out = tuple(x[:ax]) + (sum(s[ax] for s in shp),) + tuple(x[ax + 1:])
        elif n.op == "slice":
            ax = a["axis"] % len(x)
            if ax == 0:
                raise EdgepackError(f"{source}: node '{n.name}' (slice): slicing the batch dimension is not "
                                    "supported")
            if a["step"] <= 0:
                raise EdgepackError(f"{source}: node '{n.name}' (slice): step {a['step']} is not supported; "
                                    "only positive steps")
            sl = range(x[ax])[slice(a["start"], a["end"], a["step"])]
            length = len(sl)
            if length == 0:
                raise EdgepackError(f"{source}: node '{n.name}' (slice): the slice [{a['start']}:{a['end']}] of "
                                    f"a dimension of {x[ax]} is empty")
            a.update(axis=ax, start=int(sl.start), end=int(sl.start + (length - 1) * sl.step + 1),
                     step=int(sl.step))
            out = tuple(x[:ax]) + (length,) + tuple(x[ax + 1:])
        elif n.op == "pad":
            need4()
            t, l, b, r = a["pads"]
            cf, cb = a["channel_pads"]
            out = (x[0], x[1] + cf + cb, x[2] + t + b, x[3] + l + r)
        elif n.op == "prelu":
            c = x[1] if len(x) > 1 else 1
            if g.tensors[n.inputs[1]].data is None or g.tensors[n.inputs[1]].data.size not in (1, c):
                raise EdgepackError(f"{source}: node '{n.name}' (prelu): the slope must be a constant with 1 or "
                                    f"{c} (channels) values")
            out = x
        elif n.op == "flatten":
            ax = a["axis"] % len(x)
            out = tuple(x[:ax]) + (int(np.prod(x[ax:])),)
        elif n.op == "reshape":
            tgt = list(a["shape"])
            total = int(np.prod(x))
            for i, v in enumerate(tgt):
                if v == 0:
                    tgt[i] = x[i]
            if -1 in tgt:
                rest = int(np.prod([v for v in tgt if v != -1]))
                tgt[tgt.index(-1)] = total // rest
            if int(np.prod(tgt)) != total:
                raise EdgepackError(f"{source}: node '{n.name}' (reshape): cannot reshape {x} to {a['shape']}")
            a["shape"] = tuple(int(v) for v in tgt)
            out = a["shape"]
        elif n.op == "transpose":
            perm = tuple(int(v) for v in a["perm"])
            if sorted(perm) != list(range(len(x))) or perm[0] != 0:
                raise EdgepackError(f"{source}: node '{n.name}' (transpose): permutation {perm} of a {len(x)}-D "
                                    "tensor must keep the batch (dimension 0) first")
            a["perm"] = perm
            out = tuple(x[p] for p in perm)
        elif n.op == "channel_shuffle":
            need4()
            if not a["groups"] or x[1] % a["groups"]:
                raise EdgepackError(f"{source}: node '{n.name}' (channel_shuffle): {x[1]} channels do not split "
                                    f"into {a['groups']} groups")
            out = x
        elif n.op == "resize":
            need4()
            if a["mode"] not in ("nearest", "bilinear") or a["coord"] not in RESIZE_COORDS:
                raise EdgepackError(f"{source}: node '{n.name}' (resize): mode {a['mode']!r} with coordinate "
                                    f"transform {a['coord']!r} is not supported")
            a["size"] = tuple(int(v) for v in a["size"])
            out = (x[0], x[1]) + a["size"]
        elif n.op in ("lstm", "gru"):
            w = shp[1]
            if len(x) != 4 or x[2] != 1 or w[1] != x[3]:
                raise EdgepackError(f"{source}: node '{n.name}' ({n.op}): expects an (N, T, F) sequence with F = "
                                    f"{w[1]}, got {x}")
            out = (x[0], a["hidden"]) if a["last"] else (x[0], x[1], 1, a["hidden"])
        elif n.op == "dense":
            w = shp[1]
            if x[-1] != w[1]:
                raise EdgepackError(f"{source}: node '{n.name}' (dense): input has {x[-1]} features, weight "
                                    f"expects {w[1]}")
            out = tuple(x[:-1]) + (w[0],)
        elif n.op == "sign":
            if len(n.inputs) > 1:
                t = g.tensors[n.inputs[1]]
                if not t.is_const or not (tuple(t.shape) == (x[1],) or per_channel_shape(t.shape, x)):
                    raise EdgepackError(f"{source}: node '{n.name}' (sign): the threshold {tuple(t.shape)} must be a "
                                        f"constant per channel of the input {tuple(x)} (one value, or one per channel)")
            out = x
        else:  # elementwise: batchnorm, relu, clip, softmax, the functions of pointwise.UNARY
            out = x
        g.tensors[n.outputs[0]].shape = tuple(int(v) for v in out)
        g.tensors[n.outputs[0]].dtype = "float32"
    return g


# ---- the model's own layout at the boundary --------------------------------------------------------------
def io_spec(meta: dict, which: str, graph_shape) -> tuple:
    """(model shape with batch 1, view, perm) of the graph's ``which`` ("input" / "output") tensor.

    The graph tensor is ``model_tensor.reshape(view).transpose(perm).reshape(graph_shape)`` (batch N at
    dimension 0 of the graph; ``perm[0]`` is the batch axis of the view, which is the model's own shape unless
    a flatten was folded too). Without an entry in ``meta["io"]`` the model's layout is the graph's own."""
    d = (meta.get("io") or {}).get(which)
    if not d:
        return tuple(graph_shape), tuple(graph_shape), tuple(range(len(graph_shape)))
    return tuple(d["shape"]), tuple(d.get("view") or d["shape"]), tuple(d["perm"])


def model_batch_axis(meta: dict, which: str, graph_shape) -> int:
    """The batch axis of the model's own ``which`` tensor."""
    shape, view, perm = io_spec(meta, which, graph_shape)
    return perm[0] if view == shape else 0


def _with_batch(shape, axis, n):
    return tuple(n if i == axis else d for i, d in enumerate(shape))


def model_to_graph(meta: dict, which: str, graph_shape, x: np.ndarray) -> np.ndarray:
    """A batch in the model's layout (batch N at its batch axis) -> the graph's layout (batch N first)."""
    shape, view, perm = io_spec(meta, which, graph_shape)
    x = np.asarray(x)
    n = x.shape[perm[0]] if view == shape else x.shape[0]
    return x.reshape(_with_batch(view, perm[0], n)).transpose(perm).reshape((n,) + tuple(graph_shape[1:]))


def graph_to_model(meta: dict, which: str, graph_shape, y: np.ndarray) -> np.ndarray:
    """A batch in the graph's layout -> the model's layout (the inverse of :func:`model_to_graph`)."""
    shape, view, perm = io_spec(meta, which, graph_shape)
    y = np.asarray(y)
    n = len(y)
    permuted = (n,) + tuple(view[p] for p in perm[1:])
    v = y.reshape(permuted).transpose(np.argsort(perm))
    return v.reshape(_with_batch(shape, perm[0] if view == shape else 0, n))


def model_input_shape(g: Graph) -> tuple:
    """The model's own input shape (batch 1), e.g. (1, C, L) for a Conv1d model whose graph input is 4-D."""
    return io_spec(g.meta, "input", g.tensors[g.inputs[0]].shape)[0]


def model_output_shape(g: Graph) -> tuple:
    """The model's own output shape (batch 1)."""
    return io_spec(g.meta, "output", g.tensors[g.outputs[0]].shape)[0]


def fold_batchnorm(g: Graph, source: str = "model"):
    """Fold every batchnorm that directly follows a conv2d, conv_transpose2d or dense (and is its only consumer)
    into it."""
    keep = []
    for n in g.nodes:
        if n.op == "batchnorm":
            prod = g.producer(n.inputs[0])
            if prod is not None and prod.op in ("conv2d", "conv_transpose2d", "dense") \
                    and len(g.consumers(n.inputs[0])) == 1 and n.inputs[0] not in g.outputs:
                gamma, beta, mean, var = (g.const(t).astype(np.float64) for t in n.inputs[1:5])
                s = gamma / np.sqrt(var + n.attrs["eps"])
                w = g.const(prod.inputs[1]).astype(np.float64)
                if prod.op == "conv_transpose2d":  # (I, O/g, KH, KW): output channel gi * O/g + j
                    grp = prod.attrs.get("group", 1)
                    ws = w.shape
                    w = (w.reshape((grp, ws[0] // grp) + ws[1:]) * s.reshape(grp, 1, ws[1], 1, 1)).reshape(ws)
                else:
                    w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
                b = g.const(prod.inputs[2]).astype(np.float64) if len(prod.inputs) > 2 else np.zeros(len(s))
                b = (b - mean) * s + beta
                wn = g.add_const(g.fresh(prod.inputs[1] + "_bnfold"), w.astype(np.float32))
                bn = g.add_const(g.fresh(prod.name + "_bias_bnfold"), b.astype(np.float32))
                prod.inputs = [prod.inputs[0], wn, bn]
                prod.attrs["folded_bn"] = n.name
                old_out = prod.outputs[0]
                prod.outputs = [n.outputs[0]]
                del g.tensors[old_out]
                continue
            keep.extend(_batchnorm_as_depthwise(g, n, source))
            continue
        keep.append(n)
    g.nodes = keep
    g.prune_unused()
    return g


def _batchnorm_as_depthwise(g: Graph, n: Node, source: str) -> list:
    """A batchnorm that cannot be folded becomes the per-channel affine y_c = s_c x_c + (beta_c - s_c mean_c),
    s_c = gamma_c / sqrt(var_c + eps): a 1x1 depthwise conv2d (an (N, F) input is viewed as (N, F, 1, 1)), so
    it is quantized and run as one (per-channel int8 weight, int32 bias, per-channel requantization)."""
    gamma, beta, mean, var = (g.const(t).astype(np.float64) for t in n.inputs[1:5])
    s = gamma / np.sqrt(var + n.attrs["eps"])
    x, y = n.inputs[0], n.outputs[0]
    shape = g.tensors[x].shape
    c = len(s)
    if len(shape) not in (2, 4) or shape[1] != c:
        raise EdgepackError(f"{source}: node '{n.name}' (batchnorm): input of shape {shape} with {c} channels is "
                            "not supported")
    w = g.add_const(g.fresh(n.name + "_affine_w"), s.reshape(c, 1, 1, 1).astype(np.float32))
    b = g.add_const(g.fresh(n.name + "_affine_b"), (beta - s * mean).astype(np.float32))
    attrs = dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=c, affine_bn=n.name)
    if len(shape) == 4:
        return [Node("conv2d", n.name, [x, w, b], [y], attrs)]
    x4, y4 = g.fresh(x + "_4d"), g.fresh(y + "_4d")
    g.add_tensor(x4, shape + (1, 1))
    g.add_tensor(y4, shape + (1, 1))
    return [Node("reshape", n.name + "_to4d", [x], [x4], {"shape": tuple(shape) + (1, 1)}),
            Node("conv2d", n.name, [x4, w, b], [y4], attrs),
            Node("flatten", n.name + "_to2d", [y4], [y], {"axis": 1})]
