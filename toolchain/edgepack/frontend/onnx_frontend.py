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
        if len(shape) not in (2, 4):
            raise EdgepackError(f"{self.src}: input '{inp.name}' has shape {tuple(shape)}; edgepack supports NCHW "
                                "or (N, F) inputs")
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
        self.g.add_tensor(inp.name, shape=(1,) + tuple(shape[1:]))
        self.g.inputs = [inp.name]
        return g.output[0].name

    # ---- main loop -------------------------------------------------------------------------------------
    def run(self, fold_bn: bool = True) -> Graph:
        out_name = self.setup_input()
        for i, node in enumerate(self.model.graph.node):
            if not node.name:
                node.name = f"{node.op_type}_{i}"
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

    def _spatial(self, node, a, kernel, what):
        """strides, pads (t, l, b, r) and dilations of a Conv/Pool node, with auto_pad resolved."""
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        pads = tuple(a.get("pads", (0, 0, 0, 0)))
        if len(kernel) != 2 or len(strides) != 2 or len(dil) != 2 or len(pads) != 4:
            self.fail(node, f"only 2-D {what} is supported")
        auto = _s(a.get("auto_pad", "NOTSET"))
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            s = self.shape_of(node.input[0])
            if s is None or len(s) != 4:
                self.fail(node, "auto_pad SAME needs a known input shape")
            pb, pe = [], []
            for size, k, st, d in zip(s[2:], kernel, strides, dil):
                total = max((math.ceil(size / st) - 1) * st + (k - 1) * d + 1 - size, 0)
                small, big = total // 2, total - total // 2
                pb.append(small if auto == "SAME_UPPER" else big)
                pe.append(big if auto == "SAME_UPPER" else small)
            pads = (pb[0], pb[1], pe[0], pe[1])
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        elif auto != "NOTSET":
            self.fail(node, f"auto_pad '{auto}' is not supported")
        if min(pads) < 0:
            self.fail(node, f"negative pads {pads} are not supported")
        return strides, tuple(int(p) for p in pads), dil

    @ONNX_OPS.register("Conv", weights=CONV_WEIGHTS, note="2-D; groups 1 or depthwise")
    def op_Conv(self, node, a):
        x = self.act(node, node.input[0])
        w = self.const(node, node.input[1])
        if w.ndim != 4:
            self.fail(node, "only 2-D convolution is supported")
        kernel = tuple(a.get("kernel_shape", w.shape[2:]))
        strides, pads, dil = self._spatial(node, a, kernel, "convolution")
        ins = [x, self.wconst(node.input[1], w)]
        if len(node.input) > 2 and node.input[2]:
            ins.append(self.wconst(node.input[2], self.const(node, node.input[2], "bias")))
        self.g.add_node("conv2d", node.name, ins, [node.output[0]], strides=strides, pads=pads, dilations=dil,
                        group=int(a.get("group", 1)))

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
        kernel = tuple(a["kernel_shape"])
        strides, pads, dil = self._spatial(node, a, kernel, "pooling")
        if dil != (1, 1):
            self.fail(node, "dilated pooling is not supported")
        self._check_ceil(node, a, kernel, strides, pads)
        self.g.add_node("maxpool", node.name, [x], [node.output[0]], kernel=kernel, strides=strides, pads=pads)

    @ONNX_OPS.register("AveragePool")
    def op_AveragePool(self, node, a):
        x = self.act(node, node.input[0])
        kernel = tuple(a["kernel_shape"])
        strides, pads, dil = self._spatial(node, a, kernel, "pooling")
        if dil != (1, 1):
            self.fail(node, "dilated pooling is not supported")
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
        if rank != 4 or axes != [2, 3]:
            self.fail(node, f"only a mean over H and W (axes [2, 3]) of an NCHW tensor is supported, got axes "
                            f"{axes}")
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
        self.g.add_node("reshape", node.name, [x], [node.output[0]], shape=tuple(target))

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
        if w.ndim != 2:
            self.fail(node, "only a matrix product with a constant 2-D weight is supported")
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
            axis = -1 if axis == len(s) - 1 else axis
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
        if r != 4 or full[0] or full[4] or min(full) < 0:
            self.fail(node, f"pads {pads} are not supported; only non-negative padding of C, H and W of NCHW")
        self.g.add_node("pad", node.name, [x], [node.output[0]], pads=(full[2], full[3], full[6], full[7]),
                        channel_pads=(full[1], full[5]), value=value)
