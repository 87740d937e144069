"""ONNX -> float-dialect graph.

Shapes come from ``onnx.shape_inference`` run after the input's batch dimension is fixed. Nodes whose inputs
are all constant (Constant, initializers, ``Shape`` of a tensor whose shape is known, and anything computed from
those, e.g. the Shape->Gather->Concat chains that exporters emit for a flatten) are evaluated at import time with
``onnx.reference`` under the file's own opset (opset-9 Unsqueeze / Squeeze read their axes from an attribute) and
become constants. Every other node must be an operator of :data:`ONNX_OPS` (``edgepack ops`` lists them).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import EdgepackError
from ..graph import Graph
from . import finish_graph, short_reason
from .layout import lift_axis, lift_perm, lift_shape, set_io
from .optable import CONST_INT8, CONV_WEIGHTS, DENSE_WEIGHTS, OpTable, unsupported_message

ONNX_OPS = OpTable("ONNX (.onnx)")

# element-wise functions -> (float-dialect op, {ONNX attribute: (float-dialect attribute, ONNX default)})
_UNARY = {
    "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}), "HardSwish": ("hardswish", {}),
    "HardSigmoid": ("hardsigmoid", {"alpha": ("alpha", 0.2), "beta": ("beta", 0.5)}),
    "LeakyRelu": ("leaky_relu", {"alpha": ("alpha", 0.01)}), "Elu": ("elu", {"alpha": ("alpha", 1.0)}),
    "Celu": ("celu", {"alpha": ("alpha", 1.0)}), "Gelu": ("gelu", {"approximate": ("approximate", "none")}),
    "Erf": ("erf", {}), "Exp": ("exp", {}), "Neg": ("neg", {}), "Abs": ("abs", {}), "Softplus": ("softplus", {}),
    "Mish": ("mish", {}), "Sqrt": ("sqrt", {}), "Reciprocal": ("reciprocal", {}), "Selu": ("selu", {}),
    "Log": ("log", {}),
}
_COMPARE = {"Greater": "greater", "Less": "less", "GreaterOrEqual": "greater_equal", "LessOrEqual": "less_equal",
            "Where": "where"}

# ops never folded even when all inputs are constant (random or stateful)
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def load_onnx(path: Path, input_shape=None, fold_bn: bool = True) -> Graph:
    """Read an ONNX file and return the finished float-dialect graph."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, OSError, missing external data ...
        raise EdgepackError(f"{path}: not a valid ONNX model ({short_reason(e)})") from None
    _check_structure(model, path)
    return _Importer(model, path, input_shape).run(fold_bn)


def _check_structure(model, path):
    """Catch files that parse but are cut short: every tensor a node reads must be defined before it.

    (``onnx.checker`` is not used: it also refuses valid files whose graph outputs carry no shape.)
    """
    g = model.graph
    if len(g.node) == 0 or len(g.output) == 0:
        raise EdgepackError(f"{path}: not a valid ONNX model (the graph has no nodes or no outputs)")
    known = {t.name for t in g.initializer} | {i.name for i in g.input} | {""}
    for i, n in enumerate(g.node):
        for t in n.input:
            if t not in known:
                raise EdgepackError(f"{path}: not a valid ONNX model (node '{n.name or i}' reads '{t}', which "
                                    "nothing defines before it)")
        known.update(n.output)
    for o in g.output:
        if o.name not in known:
            raise EdgepackError(f"{path}: not a valid ONNX model (output '{o.name}' is never computed)")


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class _Importer:
    def __init__(self, model, path, input_shape):
        import onnx
        from onnx import numpy_helper

        self.onnx = onnx
        self.path = path
        self.src = str(path)
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.consts: dict[str, np.ndarray] = {}
        for t in model.graph.initializer:
            try:
                self.consts[t.name] = numpy_helper.to_array(t, base_dir=str(Path(path).parent))
            except Exception as e:
                raise EdgepackError(f"{path}: not a valid ONNX model (initializer '{t.name}': "
                                    f"{short_reason(e)})") from None
        self.g = Graph()
        self.reserved = {t for n in model.graph.node for t in n.output} | {i.name for i in model.graph.input}
        self.alias: dict[str, str] = {}
        self.shapes: dict[str, tuple] = {}
        self.input_shape = input_shape
        self.batch = 1
        self.skip: set[str] = set()
        # RNNs: batch axis of framework tensors whose batch is not axis 0 (the graph tensor is the framework
        # tensor with its batch moved to the front, rank 3 lifted: layout.lift_shape); final states (1, N, H)
        # whose graph tensor is (N, H); an RNN's output sequence -> its last-step output
        self.bax: dict[str, int] = {}
        self.states: set[str] = set()
        self.rnn_last: dict[str, str] = {}
        self.unusable: dict = {}  # outputs that must not be read (an LSTM's Y_c) -> their node
        self.pending: dict = {}  # output of a Transpose(2, 3, 0, 1) -> (node, input): see op_GatherND

    # ---- helpers ---------------------------------------------------------------------------------------
    def fail(self, node, msg):
        raise EdgepackError(f"{self.src}: node '{node.name}' ({node.op_type}): {msg}")

    def name(self, t):
        return self.alias.get(t, t)

    def is_const(self, t):
        return t in self.consts

    def act(self, node, t):
        """The graph tensor of activation ``t`` (an error if ``t`` is a constant or unknown)."""
        if t in self.consts:
            self.fail(node, f"input '{t}' is a constant where an activation is expected")
        if t in self.pending:
            tr = self.pending[t][0]
            self.fail(tr, "a permutation [2, 3, 0, 1] that moves the batch dimension is not supported")
        if t in self.unusable:
            self.fail(node, f"reads '{t}', the cell state output of '{self.unusable[t].name}', which is not supported")
        if self.bax.get(t) or t in self.states:
            self.fail(node, f"reads '{t}', a tensor whose batch is not its first axis (an RNN's (T, N, F) sequence or "
                            "(1, N, H) state); only transposes, reshapes and the RNNs read those")
        t = self.name(t)
        if t not in self.g.tensors:
            self.fail(node, f"input '{t}' is not produced by any supported node")
        return t

    def const(self, node, t, what="weight"):
        if t not in self.consts:
            self.fail(node, f"the {what} '{t}' must be a constant (initializer)")
        return self.consts[t]

    def newname(self, base):
        """A tensor name not yet in the graph and not used by any ONNX activation."""
        name, i = base, 0
        while name in self.g.tensors or name in self.reserved:
            i += 1
            name = f"{base}_{i}"
        return name

    def wconst(self, t, data):
        """Add a float32 weight tensor to the graph under a fresh name based on ``t``."""
        name = self.newname(t)
        self.g.add_const(name, np.asarray(data, dtype=np.float32))
        return name

    def out(self, node, i=0):
        return node.output[i]

    def shape_of(self, t):
        return self.shapes.get(t)

    # ---- input and shape inference ---------------------------------------------------------------------
    def setup_input(self):
        g = self.model.graph
        inits = {t.name for t in g.initializer}
        ins = [i for i in g.input if i.name not in inits]
        if len(ins) != 1:
            raise EdgepackError(f"{self.src}: the model has {len(ins)} inputs ({', '.join(i.name for i in ins)}); "
                                "edgepack supports exactly one")
        if len(g.output) != 1:
            raise EdgepackError(f"{self.src}: the model has {len(g.output)} outputs; edgepack supports exactly one")
        inp = ins[0]
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise EdgepackError(f"{self.src}: input '{inp.name}' is not a tensor")
        if tt.elem_type not in (1, 10, 11, 16):  # float, float16, double, bfloat16
            raise EdgepackError(f"{self.src}: input '{inp.name}' is not a float tensor")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim] \
            if tt.HasField("shape") else None
        if self.input_shape is not None:
            if dims is not None and len(dims) != len(self.input_shape):
                raise EdgepackError(f"{self.src}: --input-shape {self.input_shape} has {len(self.input_shape)} "
                                    f"dimensions but input '{inp.name}' has {len(dims)}")
            if dims is not None:
                for i, (d, v) in enumerate(zip(dims, self.input_shape)):
                    if i > 0 and d is not None and d != v:
                        raise EdgepackError(f"{self.src}: --input-shape {self.input_shape} disagrees with the "
                                            f"model's input shape {tuple(dims)}")
            shape = list(self.input_shape)
        else:
            if dims is None or any(d is None for d in dims[1:]):
                raise EdgepackError(f"{self.src}: input '{inp.name}' has no fixed shape "
                                    f"({'unknown' if dims is None else tuple(dims)}); pass --input-shape")
            shape = [1] + dims[1:]
        if len(shape) not in (2, 3, 4):
            raise EdgepackError(f"{self.src}: input '{inp.name}' has shape {tuple(shape)}; edgepack supports NCHW, "
                                "(N, C, L) or (N, F) inputs")
        # keep a fixed batch of the file for shape inference (reshape constants may name it); else 1
        self.batch = dims[0] if dims is not None and dims[0] is not None else 1
        shape[0] = self.batch
        tt.ClearField("shape")
        for v in shape:
            tt.shape.dim.add().dim_value = int(v)
        try:
            inferred = self.onnx.shape_inference.infer_shapes(self.model, data_prop=True)
        except Exception as e:
            raise EdgepackError(f"{self.src}: ONNX shape inference failed ({short_reason(e)})") from None
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
            t = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and t.HasField("shape"):
                d = [x.dim_value if x.HasField("dim_value") else None for x in t.shape.dim]
                if all(v is not None for v in d):
                    self.shapes[vi.name] = tuple(d)
        self.model_input = (1,) + tuple(shape[1:])
        self.input_perm = None
        if len(shape) == 3 and any(n.op_type in ("LSTM", "GRU") and n.input[0] == inp.name for n in g.node):
            self.model_input = (shape[0], 1, shape[2])  # (T, N, F): the RNN's sequence-major input
            self.input_perm = (1, 0, 2)
            self.bax[inp.name] = 1
        self.g.add_tensor(inp.name, shape=lift_shape(tuple(self.model_input[p] for p in self.input_perm)
                                                     if self.input_perm else self.model_input))
        self.g.inputs = [inp.name]
        return g.output[0].name

    # ---- main loop -------------------------------------------------------------------------------------
    def run(self, fold_bn: bool = True) -> Graph:
        out_name = self.setup_input()
        for i, node in enumerate(self.model.graph.node):
            if not node.name:
                node.name = f"{node.op_type}_{i}"
            if node.name in self.skip:  # consumed by a pattern imported as one op
                continue
            if node.domain not in ("", "ai.onnx"):
                self.unsupported(node)
            if self.try_fold(node):
                continue
            handler = ONNX_OPS.handler(self, node.op_type)
            if handler is None:
                self.unsupported(node)
            try:
                handler(node, _attrs(node))
            except EdgepackError:
                raise
            except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
                self.fail(node, f"cannot import this node ({short_reason(e)})")
        if out_name in self.consts:
            raise EdgepackError(f"{self.src}: the model output '{out_name}' does not depend on the input")
        out = self.name(out_name)
        if out not in self.g.tensors:
            raise EdgepackError(f"{self.src}: the model output '{out_name}' is not produced by any node")
        self.g.outputs = [out]
        if len(self.model_input) == 3:
            set_io(self.g, "input", self.model_input, self.input_perm)
        oshape = self.shape_of(out_name)
        b = self.bax.get(out_name, 1 if out_name in self.states else 0)
        if oshape is not None and (len(oshape) == 3 or b):
            dims = list(oshape)
            dims[b] = 1
            perm = (b,) + tuple(i for i in range(len(dims)) if i != b)
            set_io(self.g, "output", dims, perm if b else None)
        return finish_graph(self.g, self.src, fold_bn)

    def unsupported(self, node):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        raise EdgepackError(unsupported_message(self.src, node.name, op))

    def evaluate(self, node, inputs: dict) -> list:
        """Run one node with ``onnx.reference`` under the model's own opsets (a bare node would be evaluated at
        the newest opset, where e.g. Unsqueeze takes its axes as an input rather than an attribute)."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        graph = helper.make_graph([node], "fold", [helper.make_tensor_value_info(t, 0, None) for t in inputs],
                                  [helper.make_tensor_value_info(t, 0, None) for t in node.output if t])
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        model.ir_version = self.model.ir_version
        return ReferenceEvaluator(model).run(None, inputs)

    def try_fold(self, node) -> bool:
        """Evaluate ``node`` now if all its inputs are known constants."""
        if node.op_type in _NO_FOLD:
            return False
        if node.op_type == "Constant":
            self.consts[node.output[0]] = np.asarray(self.evaluate(node, {})[0])
            return True
        if node.op_type in ("Shape", "Size"):
            s = self.shape_of(node.input[0])
            if node.input[0] in self.consts:
                s = self.consts[node.input[0]].shape
            if s is None:
                self.fail(node, "the shape of its input is not known at import time")
            a = _attrs(node)
            if node.op_type == "Size":
                self.consts[node.output[0]] = np.array(int(np.prod(s)), dtype=np.int64)
            else:
                s = list(s)[a.get("start", 0): a.get("end", len(s))] if ("start" in a or "end" in a) else list(s)
                self.consts[node.output[0]] = np.array(s, dtype=np.int64)
            return True
        ins = [t for t in node.input if t]
        if not ins or not all(t in self.consts for t in ins):
            return False
        try:
            outs = self.evaluate(node, {t: self.consts[t] for t in ins})
        except Exception as e:
            self.fail(node, f"cannot evaluate this constant expression ({short_reason(e)})")
        for name, v in zip(node.output, outs):
            if name:
                self.consts[name] = np.asarray(v)
        return True

    # ---- operators -------------------------------------------------------------------------------------
    @ONNX_OPS.register("Identity", note="dropped")
    def op_Identity(self, node, a):
        self.alias[node.output[0]] = self.act(node, node.input[0])

    @ONNX_OPS.register("Dropout", note="dropped (inference mode only)")
    def op_Dropout(self, node, a):
        if len(node.input) > 2 and node.input[2] and self.consts.get(node.input[2], np.array(False)).item():
            self.fail(node, "dropout in training mode")
        if len(node.output) > 1 and node.output[1]:
            self.consts[node.output[1]] = np.ones(self.shape_of(node.input[0]) or (1,), dtype=bool)
        self.alias[node.output[0]] = self.act(node, node.input[0])

    @ONNX_OPS.register("Sign", note="binary activation (sign(0) = +1)")
    def op_Sign(self, node, a):
        self.g.add_node("sign", node.name, [self.act(node, node.input[0])], [node.output[0]])

    @ONNX_OPS.register("Relu", note="fused into the conv / dense / add before it, else a clamp")
    def op_Relu(self, node, a):
        self.g.add_node("relu", node.name, [self.act(node, node.input[0])], [node.output[0]])

    @ONNX_OPS.register("Clip", note="fused into the conv / dense / add before it, else a clamp")
    def op_Clip(self, node, a):
        lo, hi = a.get("min"), a.get("max")
        if self.opset >= 11:
            lo = hi = None
            if len(node.input) > 1 and node.input[1]:
                lo = float(self.const(node, node.input[1], "min").reshape(()))
            if len(node.input) > 2 and node.input[2]:
                hi = float(self.const(node, node.input[2], "max").reshape(()))
        lo = None if lo is None or lo <= -3.4e38 else float(lo)
        hi = None if hi is None or hi >= 3.4e38 else float(hi)
        self.g.add_node("clip", node.name, [self.act(node, node.input[0])], [node.output[0]], min=lo, max=hi)

    @ONNX_OPS.register("Add", note="broadcasting; a constant added after a conv / dense becomes its bias; "
                       + CONST_INT8)
    @ONNX_OPS.register("Sub", "Mul", note="broadcasting (per-channel scaling: squeeze-excite); " + CONST_INT8)
    def op_binary(self, node, a):
        x, y = node.input[0], node.input[1]
        if x in self.consts and y in self.consts:
            self.fail(node, "both inputs are constants")
        names = [self.wconst(t, self.consts[t]) if t in self.consts else self.act(node, t) for t in (x, y)]
        self.g.add_node(node.op_type.lower(), node.name, names, [node.output[0]])

    @ONNX_OPS.register(*_COMPARE, note="inside a chain of element-wise ops on one input (one lookup table), e.g. "
                       "Softplus's threshold")
    def op_compare(self, node, a):
        if all(t in self.consts for t in node.input):
            self.fail(node, "all inputs are constants")
        names = [self.wconst(t, self.consts[t]) if t in self.consts else self.act(node, t) for t in node.input]
        self.g.add_node(_COMPARE[node.op_type], node.name, names, [node.output[0]])

    @ONNX_OPS.register("Div", note="by a constant (a multiplication by its reciprocal)")
    def op_Div(self, node, a):
        x, y = node.input[0], node.input[1]
        if y not in self.consts:
            self.fail(node, "only a division by a constant is supported")
        d = np.asarray(self.consts[y], np.float64)
        if np.any(d == 0):
            self.fail(node, "division by zero")
        self.g.add_node("mul", node.name, [self.act(node, x), self.wconst(y + "_reciprocal", 1.0 / d)],
                        [node.output[0]])

    @ONNX_OPS.register("Sum", note="n-ary add of activations")
    def op_Sum(self, node, a):
        ins = [self.act(node, t) for t in node.input if t]
        if len(ins) == 1:
            self.alias[node.output[0]] = ins[0]
        else:
            self.g.add_node("sum", node.name, ins, [node.output[0]])

    @ONNX_OPS.register(*_UNARY, note="int8 lookup table (a chain of element-wise ops on one input: one table)")
    def op_unary(self, node, a):
        op, amap = _UNARY[node.op_type]
        attrs = {k: _s(a.get(onnx_name, default)) for onnx_name, (k, default) in amap.items()}
        if node.op_type == "Selu" and (abs(a.get("alpha", 1.67326319) - 1.67326319) > 1e-6
                                       or abs(a.get("gamma", 1.05070102) - 1.05070102) > 1e-6):
            self.fail(node, "only the standard SELU constants are supported")
        self.g.add_node(op, node.name, [self.act(node, node.input[0])], [node.output[0]], **attrs)

    @ONNX_OPS.register("Pow", note="with a constant scalar exponent: int8 lookup table")
    def op_Pow(self, node, a):
        e = np.asarray(self.const(node, node.input[1], "exponent"))
        if e.size != 1:
            self.fail(node, "only a scalar exponent is supported")
        self.g.add_node("pow", node.name, [self.act(node, node.input[0])], [node.output[0]],
                        exponent=float(e.reshape(())))

    @ONNX_OPS.register("PRelu", note="per-channel slopes (int8 per-tensor), one requantization per sign; a single "
                       "slope is a lookup table")
    def op_PRelu(self, node, a):
        x = self.act(node, node.input[0])
        slope = np.asarray(self.const(node, node.input[1], "slope"), np.float64)
        if slope.size == 1:
            self.g.add_node("leaky_relu", node.name, [x], [node.output[0]], alpha=float(slope.reshape(())))
            return
        s = self.shape_of(node.input[0])
        if s is None or slope.size != s[1] or slope.reshape(-1).size != max(slope.shape, default=1):
            self.fail(node, f"slope of shape {slope.shape} is not per channel of an input of shape {s}")
        self.g.add_node("prelu", node.name, [x, self.wconst(node.input[1], slope.reshape(-1))], [node.output[0]])

    @ONNX_OPS.register("Cast", note="to float only (a no-op)")
    def op_Cast(self, node, a):
        if a.get("to") not in (1,):  # FLOAT
            self.fail(node, "only a cast to float32 is supported")
        self.alias[node.output[0]] = self.act(node, node.input[0])

    @ONNX_OPS.register("Constant", "Shape", "Size", note="evaluated at import (as is any node whose inputs are "
                       "all constants)")
    def op_folded(self, node, a):
        self.fail(node, "cannot evaluate this node at import time")

    @ONNX_OPS.register("Concat", note="any axis but the batch; inputs of other scales requantized; producers "
                       "write into their slice where the layout allows")
    def op_Concat(self, node, a):
        ins = [self.act(node, t) for t in node.input if t]
        if len(ins) == 1:
            self.alias[node.output[0]] = ins[0]
            return
        self.g.add_node("concat", node.name, ins, [node.output[0]], axis=int(a["axis"]))

    def _slice_chain(self, node, x, out, cuts):
        """``out = x[cuts]``, cuts = [(axis, start, end, step)]: one slice node per axis."""
        s = self.shape_of(node.input[0])
        r = len(s) if s is not None else 4
        cur = x
        cuts = [(ax % r, st, en, sp) for ax, st, en, sp in cuts]
        for i, (ax, st, en, sp) in enumerate(cuts):
            nxt = out if i == len(cuts) - 1 else self.newname(f"{out}_ax{ax}")
            self.g.add_node("slice", node.name if i == len(cuts) - 1 else f"{node.name}_ax{ax}", [cur], [nxt],
                            axis=ax, start=st, end=en, step=sp)
            cur = nxt
        if not cuts:
            self.alias[out] = x

    @ONNX_OPS.register("Slice", note="any axis but the batch, positive steps")
    def op_Slice(self, node, a):
        x = self.act(node, node.input[0])
        if self.opset >= 10:
            starts = [int(v) for v in self.const(node, node.input[1], "starts")]
            ends = [int(v) for v in self.const(node, node.input[2], "ends")]
            axes = [int(v) for v in self.const(node, node.input[3], "axes")] \
                if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
            steps = [int(v) for v in self.const(node, node.input[4], "steps")] \
                if len(node.input) > 4 and node.input[4] else [1] * len(starts)
        else:
            starts, ends = list(a["starts"]), list(a["ends"])
            axes = list(a.get("axes", range(len(starts))))
            steps = [1] * len(starts)
        s = self.shape_of(node.input[0])
        cuts = []
        for ax, st, en, sp in zip(axes, starts, ends, steps):
            n = s[ax] if s is not None else None
            big = 2**62
            en = None if en >= big or (n is not None and en >= n) else en
            if n is not None and (st, en, sp) in ((0, None, 1),):
                continue  # the whole axis
            cuts.append((ax, st, en, sp))
        self._slice_chain(node, x, node.output[0], cuts)

    @ONNX_OPS.register("Split", note="into slices along any axis but the batch")
    def op_Split(self, node, a):
        x = self.act(node, node.input[0])
        s = self.shape_of(node.input[0])
        outs = [t for t in node.output]
        if len(node.input) > 1 and node.input[1]:
            sizes = [int(v) for v in self.const(node, node.input[1], "split")]
        elif "split" in a:
            sizes = [int(v) for v in a["split"]]
        else:
            sizes = None
        rank = len(s) if s is not None else len(self.g.tensors[x].shape or ()) or 4
        axis = int(a.get("axis", 0)) % rank
        if sizes is None:
            if s is None:
                self.fail(node, "the input shape is not known")
            n = int(a.get("num_outputs", len(outs)))
            each = -(-s[axis] // n)
            sizes = [min(each, s[axis] - i * each) for i in range(n)]
        if (s is not None and sum(sizes) != s[axis]) or len(sizes) != len(outs):
            self.fail(node, f"split sizes {sizes} do not divide axis {axis} of {s} into {len(outs)} outputs")
        start = 0
        for i, (t, k) in enumerate(zip(outs, sizes)):
            if t:
                self.g.add_node("slice", f"{node.name}_{i}", [x], [t], axis=axis, start=start, end=start + k, step=1)
            start += k

    def _spatial(self, node, a, kernel, what, auto_ok=True):
        """kernel, strides, pads (t, l, b, r) and dilations of a Conv/Pool node, with auto_pad resolved; a 1-D
        node (of an (N, C, L) tensor) becomes the 2-D one with H = 1."""
        nd = len(kernel)
        strides = tuple(a.get("strides", (1,) * nd))
        dil = tuple(a.get("dilations", (1,) * nd))
        pads = tuple(a.get("pads", (0,) * (2 * nd)))
        if nd not in (1, 2) or len(strides) != nd or len(dil) != nd or len(pads) != 2 * nd:
            self.fail(node, f"only 1-D and 2-D {what} is supported")
        auto = _s(a.get("auto_pad", "NOTSET"))
        if auto in ("SAME_UPPER", "SAME_LOWER") and auto_ok:
            s = self.shape_of(node.input[0])
            if s is None or len(s) != nd + 2:
                self.fail(node, "auto_pad SAME needs a known input shape")
            pb, pe = [], []
            for size, k, st, d in zip(s[2:], kernel, strides, dil):
                total = max((math.ceil(size / st) - 1) * st + (k - 1) * d + 1 - size, 0)
                small, big = total // 2, total - total // 2
                pb.append(small if auto == "SAME_UPPER" else big)
                pe.append(big if auto == "SAME_UPPER" else small)
            pads = tuple(pb + pe)
        elif auto == "VALID":
            pads = (0,) * (2 * nd)
        elif auto != "NOTSET":
            self.fail(node, f"auto_pad '{auto}' is not supported")
        if min(pads) < 0:
            self.fail(node, f"negative pads {pads} are not supported")
        if nd == 1:
            kernel, strides, dil, pads = (1,) + tuple(kernel), (1,) + strides, (1,) + dil, (0, pads[0], 0, pads[1])
        return tuple(int(k) for k in kernel), strides, tuple(int(p) for p in pads), dil

    @ONNX_OPS.register("Conv", weights=CONV_WEIGHTS, note="2-D; groups 1 or depthwise")
    def op_Conv(self, node, a):
        x = self.act(node, node.input[0])
        w = self.const(node, node.input[1])
        if w.ndim not in (3, 4):
            self.fail(node, "only 1-D and 2-D convolution is supported")
        kernel, strides, pads, dil = self._spatial(node, a, tuple(a.get("kernel_shape", w.shape[2:])),
                                                   "convolution")
        w = w[:, :, None, :] if w.ndim == 3 else w
        ins = [x, self.wconst(node.input[1], w)]
        if len(node.input) > 2 and node.input[2]:
            ins.append(self.wconst(node.input[2], self.const(node, node.input[2], "bias")))
        self.g.add_node("conv2d", node.name, ins, [node.output[0]], strides=strides, pads=pads, dilations=dil,
                        group=int(a.get("group", 1)))

    @ONNX_OPS.register("ConvTranspose", note="1-D and 2-D; stride, pads, output_padding, dilation; groups 1")
    def op_ConvTranspose(self, node, a):
        x = self.act(node, node.input[0])
        w = self.const(node, node.input[1])
        if w.ndim not in (3, 4):
            self.fail(node, "only 1-D and 2-D transposed convolution is supported")
        if "output_shape" in a:
            self.fail(node, "output_shape is not supported; give pads and output_padding instead")
        if _s(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
            self.fail(node, f"auto_pad '{_s(a['auto_pad'])}' is not supported for a transposed convolution")
        kernel, strides, pads, dil = self._spatial(node, a, tuple(a.get("kernel_shape", w.shape[2:])),
                                                   "transposed convolution")
        op = tuple(int(v) for v in a.get("output_padding", (0,) * (w.ndim - 2)))
        op = (0,) + op if w.ndim == 3 else op
        w = w[:, :, None, :] if w.ndim == 3 else w
        ins = [x, self.wconst(node.input[1], w)]
        if len(node.input) > 2 and node.input[2]:
            ins.append(self.wconst(node.input[2], self.const(node, node.input[2], "bias")))
        self.g.add_node("conv_transpose2d", node.name, ins, [node.output[0]], strides=strides, pads=pads,
                        output_padding=op, dilations=dil, group=int(a.get("group", 1)))

    @ONNX_OPS.register("BatchNormalization", note="folded into the conv / dense before it, else a per-channel affine (1x1 depthwise conv)")
    def op_BatchNormalization(self, node, a):
        if a.get("training_mode", 0) or (len(node.output) > 1 and any(node.output[1:])):
            self.fail(node, "batch normalization in training mode; export the model in eval mode")
        ins = [self.act(node, node.input[0])]
        for t, what in zip(node.input[1:5], ("scale", "bias", "mean", "variance")):
            ins.append(self.wconst(t, self.const(node, t, what)))
        self.g.add_node("batchnorm", node.name, ins, [node.output[0]], eps=float(a.get("epsilon", 1e-5)))

    def _check_ceil(self, node, a, kernel, strides, pads, dil=(1, 1)):
        if not a.get("ceil_mode", 0):
            return
        s = self.shape_of(node.input[0])
        s = lift_shape(s) if s is not None else None
        if s is not None and len(s) == 4:
            same = all(
                (size + p0 + p1 - d * (k - 1) - 1) % st == 0
                for size, k, st, p0, p1, d in zip(s[2:], kernel, strides, pads[:2], pads[2:], dil))
            if same:
                return  # ceil and floor give the same output size
        self.fail(node, "ceil_mode=1 is not supported; use ceil_mode=0 (floor) or pad the input")

    @ONNX_OPS.register("MaxPool")
    def op_MaxPool(self, node, a):
        x = self.act(node, node.input[0])
        if len(node.output) > 1 and node.output[1]:
            self.fail(node, "the indices output of MaxPool is not supported")
        kernel, strides, pads, dil = self._spatial(node, a, tuple(a["kernel_shape"]), "pooling")
        self._check_ceil(node, a, kernel, strides, pads, dil)
        self.g.add_node("maxpool", node.name, [x], [node.output[0]], kernel=kernel, strides=strides, pads=pads,
                        dilations=dil)

    @ONNX_OPS.register("AveragePool")
    def op_AveragePool(self, node, a):
        x = self.act(node, node.input[0])
        kernel, strides, pads, dil = self._spatial(node, a, tuple(a["kernel_shape"]), "pooling")
        if dil != (1, 1):
            self.fail(node, "dilated average pooling is not supported")
        self._check_ceil(node, a, kernel, strides, pads)
        self.g.add_node("avgpool", node.name, [x], [node.output[0]], kernel=kernel, strides=strides, pads=pads,
                        count_include_pad=bool(a.get("count_include_pad", 0)))

    @ONNX_OPS.register("GlobalAveragePool")
    def op_GlobalAveragePool(self, node, a):
        self.g.add_node("global_avgpool", node.name, [self.act(node, node.input[0])], [node.output[0]])

    @ONNX_OPS.register("ReduceMean", note="over H and W only")
    def op_ReduceMean(self, node, a):
        x = self.act(node, node.input[0])
        axes = a.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self.const(node, node.input[1], "axes")
        s = self.shape_of(node.input[0])
        rank = len(s) if s is not None else 4
        axes = sorted(int(v) % rank for v in axes) if axes is not None and len(axes) else None
        if (rank, axes) not in ((4, [2, 3]), (3, [2])):
            self.fail(node, f"only a mean over H and W (axes [2, 3]) of an NCHW tensor or over L (axis 2) of an "
                            f"(N, C, L) tensor is supported, got axes {axes}")
        if a.get("keepdims", 1):
            self.g.add_node("global_avgpool", node.name, [x], [node.output[0]])
        else:
            mid = self.newname(node.output[0] + "_keepdims")
            self.g.add_node("global_avgpool", node.name, [x], [mid])
            self.g.add_node("flatten", node.name + "_flatten", [mid], [node.output[0]], axis=1)

    @ONNX_OPS.register("Flatten")
    def op_Flatten(self, node, a):
        x = self.act(node, node.input[0])
        axis = int(a.get("axis", 1))
        s = self.shape_of(node.input[0])
        if axis < 0 and s is not None:
            axis += len(s)
        if axis == 0 and self.batch == 1:
            axis = 1  # (1, C*H*W) either way with batch 1
        if axis != 1:
            self.fail(node, f"flatten with axis={a.get('axis')} is not supported; only axis=1")
        self.g.add_node("flatten", node.name, [x], [node.output[0]], axis=1)

    @ONNX_OPS.register("Reshape", note="keeping the batch; a spatial tensor only flattened before a dense layer")
    def op_Reshape(self, node, a):
        if self.bax.get(node.input[0]) or node.input[0] in self.states:
            return self._reshape_to_inferred(node)
        x = self.act(node, node.input[0])
        target = [int(v) for v in self.const(node, node.input[1], "shape")]
        sx, sy = self.shape_of(node.input[0]), self.shape_of(node.output[0])
        if a.get("allowzero", 0) and 0 in target:
            self.fail(node, "allowzero with a zero in the shape is not supported")
        if sx is not None and sy is not None:
            if not sy or sx[0] != sy[0]:
                self.fail(node, f"a reshape from {sx} to {sy} changes the batch dimension; only reshapes that "
                                "keep dimension 0 are supported")
            target = [1] + list(sy[1:])
        elif target and target[0] == self.batch:
            target[0] = 1
        if len(target) == 3 and -1 in target:
            self.fail(node, "a reshape to an unknown rank-3 shape is not supported (shape inference gave no shape)")
        self.g.add_node("reshape", node.name, [x], [node.output[0]], shape=lift_shape(target))

    def _reshape_to_inferred(self, node):
        """Squeeze / Unsqueeze of an activation: a reshape to the shape ONNX shape inference gave it."""
        if node.input[0] in self.states and self.shape_of(node.output[0]) is not None and \
                len(self.shape_of(node.output[0])) == 2:  # Y_h (1, N, H) -> (N, H)
            self.alias[node.output[0]] = self.name(node.input[0])
            return
        if self.bax.get(node.input[0]):
            return self._batch_reshape(node)
        x = self.act(node, node.input[0])
        sx, sy = self.shape_of(node.input[0]), self.shape_of(node.output[0])
        if sx is None or sy is None:
            self.fail(node, "the shapes of its input and output are not known at import time")
        if not sy or sx[0] != sy[0]:
            self.fail(node, f"a reshape from {sx} to {sy} changes the batch dimension; only reshapes that keep "
                            "dimension 0 are supported")
        self.g.add_node("reshape", node.name, [x], [node.output[0]], shape=lift_shape([1] + list(sy[1:])))

    @ONNX_OPS.register("Squeeze", note="keeping the batch (a reshape)")
    def op_Squeeze(self, node, a):
        self._reshape_to_inferred(node)

    @ONNX_OPS.register("Unsqueeze", note="keeping the batch (a reshape)")
    def op_Unsqueeze(self, node, a):
        self._reshape_to_inferred(node)

    @ONNX_OPS.register("Transpose", note="folded into the boundary or the dense weights where the NHWC memory order allows, else one transpose_s8 copy")
    def op_Transpose(self, node, a):
        s = self.shape_of(node.input[0])
        if s is None:
            self.fail(node, "the rank of its input is not known at import time")
        perm = [int(p) for p in a.get("perm", list(range(len(s)))[::-1])]
        b = self.bax.get(node.input[0], 0)
        if b or (perm[0] != 0 and perm != [2, 3, 0, 1]):
            return self._batch_move(node, perm, b)
        x = self.act(node, node.input[0])
        if perm == [2, 3, 0, 1]:  # maybe the start of a nearest resize as a gather (op_GatherND)
            self.pending[node.output[0]] = (node, x)
            return
        self.g.add_node("transpose", node.name, [x], [node.output[0]], perm=lift_perm(perm))

    def _batch_move(self, node, perm, b):
        """A transpose that moves the batch (RNN sequences): the graph keeps the batch first, so only the order
        of the other axes can change; the output's batch axis is remembered (``self.bax``)."""
        if node.input[0] in self.states:
            self.fail(node, "a transpose of an RNN's final state is not supported; select it first")
        x = self.name(node.input[0])
        r = len(perm)
        b_out = perm.index(b)
        rest_in = [i for i in range(r) if i != b]
        rest_out = [perm[j] for j in range(r) if j != b_out]
        k = (0,) + tuple(1 + rest_in.index(i) for i in rest_out)
        if k == tuple(range(r)):
            self.alias[node.output[0]] = x
        else:
            self.g.add_node("transpose", node.name, [x], [node.output[0]], perm=lift_perm(k))
        if b_out:
            self.bax[node.output[0]] = b_out

    def _batch_reshape(self, node):
        """A reshape / squeeze / unsqueeze of a tensor whose batch is not axis 0 that only removes or inserts
        size-1 axes: the batch keeps its place among the other axes."""
        t = node.input[0]
        sx, sy = self.shape_of(t), self.shape_of(node.output[0])
        if sx is None or sy is None:
            self.fail(node, "the shapes of its input and output are not known at import time")
        b = self.bax[t]
        if [d for d in sx if d != 1] != [d for d in sy if d != 1]:
            self.fail(node, f"a reshape from {sx} to {sy} of an RNN's sequence is not supported")
        before = sum(1 for d in sx[:b] if d != 1)  # non-singleton axes before the batch
        seen, b_out = 0, None
        for i, d in enumerate(sy):
            if d != 1:
                seen += 1
            elif seen == before and b_out is None:
                b_out = i
        if b_out is None:
            self.fail(node, f"a reshape from {sx} to {sy} removes the batch axis")
        x = self.name(t)
        gshape = lift_shape((1,) + tuple(d for i, d in enumerate(sy) if i != b_out))
        if tuple(self.g.tensors[x].shape or gshape) == tuple(gshape):
            self.alias[node.output[0]] = x
        else:
            self.g.add_node("reshape", node.name, [x], [node.output[0]], shape=gshape)
        if b_out:
            self.bax[node.output[0]] = b_out

    def _rnn(self, node, a, cell, order):
        """ONNX LSTM (gates i, o, f, c) / GRU (z, r, h; linear_before_reset=1, as PyTorch) -> the float
        dialect's lstm / gru (PyTorch's gate order): single layer, forward, layout 0, no peepholes, zero or no
        initial state, no sequence lengths."""
        if _s(a.get("direction", "forward")) != "forward" or a.get("layout", 0) or a.get("clip") is not None \
                or a.get("input_forget", 0) or a.get("activations"):
            self.fail(node, "only a forward, layout-0 RNN with the default activations and no clip is supported")
        if cell == "gru" and not a.get("linear_before_reset", 0):
            self.fail(node, "only linear_before_reset=1 (PyTorch's GRU) is supported")
        x = node.input[0]
        if self.bax.get(x) != 1:
            self.fail(node, f"its input '{x}' must be a (T, N, F) sequence computed from the model input")
        for i, t in enumerate(node.input):
            if i < 4 or not t:
                continue
            if i in (4, 7):
                self.fail(node, f"{'sequence_lens' if i == 4 else 'peepholes'} are not supported")
            if t not in self.consts or np.any(self.consts[t] != 0):
                self.fail(node, "only a zero initial state is supported")
        w = self.const(node, node.input[1], "W")[0]
        r = self.const(node, node.input[2], "R")[0]
        hidden = int(a.get("hidden_size", r.shape[1]))
        nb = len(order)
        bias = self.const(node, node.input[3], "B")[0] if len(node.input) > 3 and node.input[3] else \
            np.zeros(2 * nb * hidden, np.float32)

        def torch_order(m):
            return np.concatenate([m[k * hidden:(k + 1) * hidden] for k in order])

        ins = [self.name(x), self.wconst(node.input[1], torch_order(w)), self.wconst(node.input[2], torch_order(r)),
               self.wconst(node.input[1] + "_bias_ih", torch_order(bias[:nb * hidden])),
               self.wconst(node.input[2] + "_bias_hh", torch_order(bias[nb * hidden:]))]
        seq = self.newname(node.output[0] or node.name + "_y")
        last = self.newname(node.name + "_last")
        self.g.add_node(cell, node.name, ins, [seq], hidden=hidden, last=False)
        self.g.add_node(cell, node.name + "_last", ins, [last], hidden=hidden, last=True)
        self.rnn_last[seq] = last
        if node.output[0]:  # Y (T, num_directions = 1, N, H)
            self.alias[node.output[0]] = seq
            self.bax[node.output[0]] = 2
        if len(node.output) > 1 and node.output[1]:  # Y_h (1, N, H)
            self.alias[node.output[1]] = last
            self.states.add(node.output[1])
        if len(node.output) > 2 and node.output[2]:
            self.unusable[node.output[2]] = node

    @ONNX_OPS.register("LSTM", note="single layer, unidirectional, zero initial state (TFLite integer LSTM)")
    def op_LSTM(self, node, a):
        self._rnn(node, a, "lstm", (0, 2, 3, 1))

    @ONNX_OPS.register("GRU", note="single layer, unidirectional, zero initial state (int8, TFLite LSTM conventions)")
    def op_GRU(self, node, a):
        self._rnn(node, a, "gru", (1, 0, 2))

    @ONNX_OPS.register("Gather", note="constant indices: a channel shuffle (one gather) or part of a nearest resize")
    def op_Gather(self, node, a):
        """The last step of an RNN's output sequence, or its (1, N, H) final state's only layer."""
        t = node.input[0]
        if t in self.consts or node.input[1] not in self.consts:
            self.unsupported(node)
        idx = np.asarray(self.consts[node.input[1]])
        s = self.shape_of(t)
        axis = int(a.get("axis", 0)) % len(s) if s is not None else None
        if idx.size != 1 or s is None or idx.ndim != 0:
            self.unsupported(node)
        i = int(idx) % s[axis]
        g = self.name(t)
        time_axis = 0 if self.bax.get(t) == 1 else 1
        if t in self.states and axis == 0:
            self.alias[node.output[0]] = g
        elif g in self.rnn_last and len(s) == 3 and axis == time_axis and i == s[axis] - 1:
            self.alias[node.output[0]] = self.rnn_last[g]
        else:
            self.fail(node, "a gather is supported only for the last step of an RNN's output or its final state")

    @ONNX_OPS.register("GatherND", note="the nearest resize pattern of the legacy exporter")
    def op_GatherND(self, node, a):
        """Transpose(2, 3, 0, 1) -> GatherND(constant (OH, OW, 2) indices) -> Transpose(p): how the dynamo
        exporter writes PyTorch's 'nearest-exact' upsampling (p = (2, 3, 0, 1), or that merged with a following
        permute). When the indices are separable and match a nearest-resize rule, it is imported as that resize
        (and the rest of p as a transpose); any other GatherND is not supported."""
        if node.input[0] not in self.pending or not self._gather_resize(node, *self.pending[node.input[0]]):
            self.unsupported(node)

    def _gather_resize(self, gnd, node, x) -> bool:
        users = [n for n in self.model.graph.node if node.output[0] in n.input]
        if len(users) != 1 or gnd.input[1] not in self.consts:
            return False
        idx = np.asarray(self.consts[gnd.input[1]])
        after = [n for n in self.model.graph.node if gnd.output[0] in n.input]
        sx = self.shape_of(node.input[0])
        if (len(after) != 1 or after[0].op_type != "Transpose" or sx is None or len(sx) != 4 or idx.ndim != 3
                or idx.shape[2] != 2 or _attrs(gnd).get("batch_dims", 0)):
            return False
        rest = [(2, 3, 0, 1)[p] for p in _attrs(after[0]).get("perm", [3, 2, 1, 0])]  # after the resize
        if rest[0] != 0:
            return False
        iy, ix = idx[:, 0, 0], idx[0, :, 1]
        if not (np.array_equal(idx[..., 0], np.broadcast_to(iy[:, None], idx.shape[:2]))
                and np.array_equal(idx[..., 1], np.broadcast_to(ix[None, :], idx.shape[:2]))):
            return False
        from ..reference.float_exec import nearest_indices
        (h, w), (oh, ow) = sx[2:], idx.shape[:2]
        for coord, rounding in (("half_pixel", "round_prefer_ceil"), ("asymmetric", "floor"),
                                ("align_corners", "round_prefer_ceil"), ("half_pixel", "round_prefer_floor")):
            if np.array_equal(nearest_indices(oh, h, coord, rounding), iy) and \
                    np.array_equal(nearest_indices(ow, w, coord, rounding), ix):
                y = after[0].output[0]
                mid = y if rest == [0, 1, 2, 3] else self.newname(gnd.output[0] + "_resized")
                self.g.add_node("resize", node.name, [x], [mid], mode="nearest", size=(oh, ow), coord=coord,
                                nearest=rounding, scales=None)
                if mid != y:
                    self.g.add_node("transpose", after[0].name, [mid], [y], perm=tuple(rest))
                self.skip.add(after[0].name)
                del self.pending[node.output[0]]
                return True
        return False

    def _resize(self, node, mode, coord, nearest, scales):
        x = self.act(node, node.input[0])
        sx, sy = self.shape_of(node.input[0]), self.shape_of(node.output[0])
        if sx is None or sy is None or len(sx) not in (3, 4):
            self.fail(node, "only a resize of a known (N, C, H, W) or (N, C, L) shape is supported")
        if tuple(sx[:2]) != tuple(sy[:2]):
            self.fail(node, f"a resize from {sx} to {sy} of the batch or channel axes is not supported")
        if mode not in ("nearest", "linear"):
            self.fail(node, f"mode '{mode}' is not supported; only nearest and linear")
        if coord not in ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners"):
            self.fail(node, f"coordinate_transformation_mode '{coord}' is not supported")
        if scales is not None:
            scales = [float(v) for v in np.asarray(scales).reshape(-1)]
            if len(scales) != len(sx) or scales[:2] != [1.0, 1.0]:
                self.fail(node, f"scales {scales} must be 1 on the batch and channel axes")
            scales = tuple(lift_shape(scales)[2:])
        self.g.add_node("resize", node.name, [x], [node.output[0]], mode="bilinear" if mode == "linear" else mode,
                        size=tuple(lift_shape(sy)[2:]), coord=coord, nearest=nearest, scales=scales)

    @ONNX_OPS.register("Resize", note="nearest (any integer scale) and bilinear (align_corners True / False), TFLite int8")
    def op_Resize(self, node, a):
        if a.get("antialias", 0) or a.get("axes") is not None:
            self.fail(node, "antialias and axes are not supported")
        mode = _s(a.get("mode", "nearest"))
        if self.opset < 11:  # opset 10: like Upsample
            scales = self.const(node, node.input[1], "scales")
            return self._resize(node, mode, "asymmetric", "floor", scales)
        scales = None
        if len(node.input) > 2 and node.input[2]:
            scales = self.const(node, node.input[2], "scales")
            scales = scales if scales.size else None
        self._resize(node, mode, _s(a.get("coordinate_transformation_mode", "half_pixel")),
                     _s(a.get("nearest_mode", "round_prefer_floor")), scales)

    @ONNX_OPS.register("Upsample", note="nearest or bilinear (opset 7-9)")
    def op_Upsample(self, node, a):
        scales = a.get("scales")
        if len(node.input) > 1 and node.input[1]:
            scales = self.const(node, node.input[1], "scales")
        self._resize(node, _s(a.get("mode", "nearest")), "asymmetric", "floor", scales)

    @ONNX_OPS.register("Gemm", weights=DENSE_WEIGHTS)
    def op_Gemm(self, node, a):
        if a.get("transA", 0):
            self.fail(node, "transA=1 is not supported")
        x = self.act(node, node.input[0])
        w = self.const(node, node.input[1]).astype(np.float64)
        if w.ndim != 2:
            self.fail(node, "the weight must be 2-D")
        w = w if a.get("transB", 0) else w.T
        w = w * float(a.get("alpha", 1.0))
        ins = [x, self.wconst(node.input[1], w)]
        if len(node.input) > 2 and node.input[2]:
            c = self.const(node, node.input[2], "bias").astype(np.float64) * float(a.get("beta", 1.0))
            if c.size not in (1, w.shape[0]) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
                self.fail(node, f"bias of shape {c.shape} is not supported")
            ins.append(self.wconst(node.input[2], np.broadcast_to(c.reshape(-1), (w.shape[0],))))
        self.g.add_node("dense", node.name, ins, [node.output[0]])

    @ONNX_OPS.register("MatMul", weights=DENSE_WEIGHTS, note="with a constant 2-D weight")
    def op_MatMul(self, node, a):
        x = self.act(node, node.input[0])
        w = self.const(node, node.input[1])
        s = self.shape_of(node.input[0])
        if w.ndim != 2 or (s is not None and len(s) > 2):
            self.fail(node, "only a matrix product of an (N, F) activation with a constant 2-D weight is "
                            "supported; flatten the input first")
        self.g.add_node("dense", node.name, [x, self.wconst(node.input[1], w.T)], [node.output[0]])

    @ONNX_OPS.register("Softmax", note="last axis of (1, N), as the last op")
    def op_Softmax(self, node, a):
        x = self.act(node, node.input[0])
        s = self.shape_of(node.input[0])
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
        if s is not None:
            axis %= len(s)
            if self.opset < 13 and axis != len(s) - 1:
                self.fail(node, "softmax over more than the last axis (opset < 13) is not supported")
            axis = -1 if axis == len(s) - 1 else lift_axis(axis, len(s))
        self.g.add_node("softmax", node.name, [x], [node.output[0]], axis=axis)

    @ONNX_OPS.register("Pad", note="constant mode, any value, H / W / C; a zero pad before a conv or average "
                       "pool is merged into it")
    def op_Pad(self, node, a):
        x = self.act(node, node.input[0])
        mode = _s(a.get("mode", "constant"))
        if mode != "constant":
            self.fail(node, f"pad mode '{mode}' is not supported; only constant padding")
        if self.opset >= 11:
            pads = [int(v) for v in self.const(node, node.input[1], "pads")]
            value = 0.0
            if len(node.input) > 2 and node.input[2]:
                value = float(self.const(node, node.input[2], "constant value").reshape(-1)[0])
            axes = None
            if len(node.input) > 3 and node.input[3]:
                axes = [int(v) for v in self.const(node, node.input[3], "axes")]
        else:
            pads, value, axes = list(a.get("pads", [])), float(a.get("value", 0.0)), None
        rank = len(pads) // 2
        if axes is None:
            axes = list(range(rank))
        s = self.shape_of(node.input[0])
        r = len(s) if s is not None else 4
        full = [0] * (2 * r)
        for i, ax in enumerate(axes):
            ax %= r
            full[ax], full[r + ax] = pads[i], pads[rank + i]
        if r == 3:  # L of an (N, C, L) tensor: W of its (N, C, 1, L) form
            r, full = 4, [full[0], full[1], 0, full[2], full[3], full[4], 0, full[5]]
        if r != 4 or full[0] or full[4] or min(full) < 0:
            self.fail(node, f"pads {pads} are not supported; only non-negative padding of C, H and W of NCHW")
        self.g.add_node("pad", node.name, [x], [node.output[0]], pads=(full[2], full[3], full[6], full[7]),
                        channel_pads=(full[1], full[5]), value=value)
