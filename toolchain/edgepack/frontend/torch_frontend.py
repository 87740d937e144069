"""PyTorch -> float-dialect graph: torch.export (.pt2), TorchScript and pickled nn.Module (.pt).

All three go through one walker over an ExportedProgram's FX graph of aten ops (:class:`_Walker`); it accepts
both the pre-dispatch ops that ``torch.export.export`` emits (conv2d, batch_norm, linear, ...) and their core-aten
decompositions (convolution, _native_batch_norm_legit_no_training, addmm, ...). Nodes with no activation among
their inputs (``t``/``permute`` of a weight, size arithmetic) are evaluated with torch at import time.
Reshape targets are taken from the node's recorded output shape (``meta["val"]``) with the batch kept at dim 0.

* ``.pt2``: ``torch.export.load``.
* pickled ``nn.Module`` (``torch.save(model)``): only with ``trust_pickle`` (``--trust-pickle``):
  ``torch.load(weights_only=False)`` runs the pickle, so it could run any code, and needs the model's class
  importable; then ``torch.export.export`` at ``input_shape`` with batch 1. Without the opt-in such a file is
  refused (a state_dict, read with the weights-only unpickler, is named as such).
* ``.pt2`` archives are read with every pickled member going through torch's weights-only unpickler, so
  loading one never runs code from the file.
* TorchScript (``torch.jit.save``): ``torch.jit.load`` then ``torch._export.converter.TS2EPConverter``, which
  turns the scripted or traced module into an ExportedProgram of the same aten ops, so TorchScript models share
  the walker, its op names in errors and the exact weights. The alternative, the TorchScript-based
  ``torch.onnx.export(..., dynamo=False)`` then the ONNX importer, is deprecated since torch 2.9 and rewrites
  simple ops into long ONNX chains (a ZeroPad2d becomes 16 nodes); it is kept only as a fallback for modules the
  converter cannot handle.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import EdgepackError
from ..graph import Graph
from . import finish_graph, short_reason
from .layout import lift_axis, lift_perm, lift_shape, set_io
from .optable import CONST_INT8, CONV_WEIGHTS, DENSE_WEIGHTS, OpTable, unsupported_message

TORCH_OPS = OpTable("PyTorch (.pt2 torch.export, .pt TorchScript or nn.Module): aten operators")

# element-wise functions -> (float-dialect op, {float-dialect attribute: aten argument})
_UNARY = {
    "sigmoid": ("sigmoid", {}), "sigmoid_": ("sigmoid", {}), "tanh": ("tanh", {}), "tanh_": ("tanh", {}),
    "hardswish": ("hardswish", {}), "hardswish_": ("hardswish", {}),
    "hardsigmoid": ("hardsigmoid", {}), "hardsigmoid_": ("hardsigmoid", {}),
    "silu": ("silu", {}), "silu_": ("silu", {}), "mish": ("mish", {}), "mish_": ("mish", {}),
    "leaky_relu": ("leaky_relu", {"alpha": "negative_slope"}), "leaky_relu_": ("leaky_relu", {"alpha": "negative_slope"}),
    "elu": ("elu", {"alpha": "alpha"}), "elu_": ("elu", {"alpha": "alpha"}),
    "celu": ("celu", {"alpha": "alpha"}), "celu_": ("celu", {"alpha": "alpha"}), "selu": ("selu", {}),
    "selu_": ("selu", {}), "gelu": ("gelu", {"approximate": "approximate"}),
    "gelu_": ("gelu", {"approximate": "approximate"}), "erf": ("erf", {}), "exp": ("exp", {}), "neg": ("neg", {}),
    "abs": ("abs", {}), "softplus": ("softplus", {"beta": "beta", "threshold": "threshold"}),
    "sqrt": ("sqrt", {}), "reciprocal": ("reciprocal", {}), "log": ("log", {}),
}
_COMPARE = {"gt": "greater", "lt": "less", "ge": "greater_equal", "le": "less_equal"}


@contextlib.contextmanager
def _quiet():
    """Silence torch's warnings and log lines (they print tracebacks for files it cannot read)."""
    prev = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(prev)


def _torch_reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    for cut in (" This is an internal miniz error", " If you are seeing this error"):
        text = text.split(cut)[0]
    return short_reason(Exception(text) if text else e)  # not type(e)(text): many take other arguments


def _import_torch(path):
    try:
        import torch
    except ImportError:
        raise EdgepackError(f"{path}: reading PyTorch models needs the 'torch' package") from None
    return torch


@contextlib.contextmanager
def _no_code_from_pickles(torch):
    """Within: every unpickling that ``torch.export.load`` does goes through torch's weights-only unpickler,
    which builds only tensors, storages and plain containers and refuses any other global, so a ``__reduce__``
    payload in any pickled member of the archive (sample inputs, pickled weights or constants, legacy weight
    and constant files) is never called. Python's own unpickling functions (``pickle.load``, ``pickle.loads``:
    opaque constants) and TorchScript's object unpickler (custom-class constants) are refused outright while
    it runs."""
    import pickle

    def refuse(*_a, **_k):
        raise pickle.UnpicklingError("the archive holds a pickled Python object; edgepack does not unpickle "
                                     "objects from model files")

    real_load = torch.load

    def weights_only_load(f, *args, **kw):
        kw["weights_only"] = True
        return real_load(f, *args, **kw)

    saved = [(torch, "load", weights_only_load), (torch._C, "_pickle_load_obj", refuse),
             (pickle, "load", refuse), (pickle, "loads", refuse)]
    saved = [(obj, name, getattr(obj, name), new) for obj, name, new in saved]
    for obj, name, _old, new in saved:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, old, _new in saved:
            setattr(obj, name, old)


def load_pt2(path: Path, input_shape=None, fold_bn: bool = True) -> Graph:
    """Read a torch.export.save archive without running code from it (:func:`_no_code_from_pickles`)."""
    torch = _import_torch(path)
    try:
        with _quiet(), _no_code_from_pickles(torch):
            ep = torch.export.load(str(path))
    except Exception as e:
        if "Weights only load failed" in str(e) or "does not unpickle" in str(e) or \
                type(e).__name__ == "UnpicklingError":
            raise EdgepackError(f"{path}: the archive holds pickled data that is not plain tensors (it could run "
                                "code when loaded), so edgepack refuses it; re-export the model with "
                                "torch.export.save from a trusted environment") from None
        raise EdgepackError(f"{path}: not a valid torch.export (.pt2) file ({_torch_reason(e)})") from None
    return _Walker(ep, str(path), input_shape).run(fold_bn)


def load_pt(path: Path, input_shape=None, fold_bn: bool = True, trust_pickle: bool = False):
    """Read a TorchScript file, or a pickled nn.Module if ``trust_pickle``; returns (graph, format)."""
    torch = _import_torch(path)
    try:
        with _quiet():
            sm = torch.jit.load(str(path), map_location="cpu")
    except Exception:
        sm = None
    if sm is not None:
        return _from_torchscript(torch, sm, path, input_shape, fold_bn), "torchscript"
    try:  # plain tensors and containers only: never runs code
        with _quiet():
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        try:  # which Python objects the pickle would build (read without running it)
            from torch.serialization import get_unsafe_globals_in_checkpoint
            objects = get_unsafe_globals_in_checkpoint(str(path))
        except Exception:
            objects = []
        if not objects:
            raise EdgepackError(f"{path}: not a valid PyTorch file ({_torch_reason(e)})") from None
        obj = None
    if obj is not None and not isinstance(obj, torch.nn.Module):
        what = "a state_dict" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise EdgepackError(f"{path}: the file holds {what}, not a model; save the nn.Module itself "
                            "(torch.save(model)), or use torch.export.save / torch.jit.save")
    if not trust_pickle:
        shown = ", ".join(objects[:2]) + (", ..." if len(objects) > 2 else "")
        raise EdgepackError(f"{path}: a pickled nn.Module ({shown}); unpickling it runs code from the file, so "
                            "edgepack needs --trust-pickle to load it (only for files you trust), or save the "
                            "model with torch.export.save (.pt2) or torch.jit.save")
    try:
        with _quiet():
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError, ImportError) as e:
        raise EdgepackError(f"{path}: cannot unpickle the model ({short_reason(e)}); the module defining its "
                            "class must be importable (PYTHONPATH), or save it with torch.export.save or "
                            "torch.jit.save") from None
    except Exception as e:
        raise EdgepackError(f"{path}: not a valid PyTorch file ({_torch_reason(e)})") from None
    if isinstance(obj, torch.jit.ScriptModule):
        return _from_torchscript(torch, obj, path, input_shape, fold_bn), "torchscript"
    if not isinstance(obj, torch.nn.Module):
        what = "a state_dict" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise EdgepackError(f"{path}: the file holds {what}, not a model; save the nn.Module itself "
                            "(torch.save(model)), or use torch.export.save / torch.jit.save")
    if input_shape is None:
        raise EdgepackError(f"{path}: a pickled nn.Module carries no input shape; pass --input-shape "
                            "(e.g. 1,3,32,32) or --calib")
    try:
        with _quiet(), torch.no_grad():
            ep = torch.export.export(obj.eval(), (torch.zeros(input_shape),))
    except Exception as e:
        raise EdgepackError(f"{path}: torch.export failed on the model at input shape {input_shape} "
                            f"({_torch_reason(e)})") from None
    return _Walker(ep, str(path), input_shape).run(fold_bn), "nn.Module"


def _from_torchscript(torch, sm, path, input_shape, fold_bn=True) -> Graph:
    if input_shape is None:
        raise EdgepackError(f"{path}: a TorchScript file carries no input shape; pass --input-shape "
                            "(e.g. 1,3,32,32) or --calib")
    sm = sm.eval()
    try:
        from torch._export.converter import TS2EPConverter
        with _quiet(), torch.no_grad():
            ep = TS2EPConverter(sm, (torch.zeros(input_shape),)).convert()
    except Exception as e:
        first = e
        ep = None
    if ep is not None:
        return _Walker(ep, str(path), input_shape).run(fold_bn)
    # fallback: the TorchScript ONNX exporter, then the ONNX importer
    from .onnx_frontend import load_onnx
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "model.onnx"
        try:
            with _quiet():
                torch.onnx.export(sm, (torch.zeros(input_shape),), str(tmp), dynamo=False)
        except Exception:
            raise EdgepackError(f"{path}: cannot convert the TorchScript module ({_torch_reason(first)})") from None
        g = load_onnx(tmp, input_shape, fold_bn)
    return g


# ---- the FX walker ---------------------------------------------------------------------------------------
class _Act(str):
    """Name of an activation tensor in the graph being built.

    The graph's tensors are batch first. A framework tensor whose batch is not its axis 0 -- the (T, N, F)
    sequences of RNNs with batch_first=False, and their final states (1, N, H) -- has ``batch_axis`` 1, or
    ``layer_axis`` (a leading num_layers = 1 axis); only the RNN ops, transpose(0, 1), select / squeeze of
    that axis and the model's output read such tensors."""

    batch_axis = 0
    layer_axis = False

    @staticmethod
    def of(name, batch_axis=0, layer_axis=False):
        a = _Act(name)
        a.batch_axis, a.layer_axis = batch_axis, layer_axis
        return a


class _Unused:
    """A secondary output (indices, saved statistics) that must not be used."""

    def __init__(self, node):
        self.node = node


_IGNORED_PREFIXES = ("_assert", "sym_constrain_range")
_SIZE_OPS = ("sym_size", "size", "dim")


def _opname(target) -> str:
    return getattr(target, "_opname", getattr(target, "__name__", str(target)))


def _bind(target, args, kwargs) -> dict:
    """Arguments of an aten op call by schema name, defaults filled in."""
    out = {}
    for i, a in enumerate(target._schema.arguments):
        if i < len(args):
            out[a.name] = args[i]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
        else:
            out[a.name] = None
    return out


def _pair(v):
    if isinstance(v, (list, tuple)):
        v = [int(x) for x in v]
        return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])
    return (int(v), int(v))


def _hw(v, one_d: bool, fill: int):
    """A 2-D (H, W) parameter; a 1-D op's single value becomes W with ``fill`` for H (its H is 1)."""
    if not one_d:
        return _pair(v)
    v = [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]
    return (fill, v[0])


def _concrete(v):
    """int for a concrete size, None for a symbolic one."""
    if isinstance(v, int):
        return v
    try:
        return v.node.maybe_as_int()
    except AttributeError:
        return None


class _Walker:
    def __init__(self, ep, source, input_shape):
        import torch

        self.torch = torch
        self.ep = ep
        self.src = source
        self.input_shape = input_shape
        self.g = Graph()
        self.env: dict = {}
        self.fqn: dict = {}  # placeholder name -> parameter/buffer name, used to name weights
        self.rnn_last: dict = {}  # RNN output sequence -> the same RNN's last-step output
        self.input_perm = None

    # ---- helpers ---------------------------------------------------------------------------------------
    def fail(self, node, msg):
        raise EdgepackError(f"{self.src}: node '{node.name}' ({self._tname(node)}): {msg}")

    @staticmethod
    def _tname(node):
        return str(node.target) if node.op == "call_function" else node.op

    def unsupported(self, node):
        raise EdgepackError(unsupported_message(self.src, node.name, self._tname(node)))

    def meta_shape(self, node):
        v = node.meta.get("val") if hasattr(node, "meta") else None
        return tuple(v.shape) if v is not None and hasattr(v, "shape") else None

    def rank(self, fxnode, node):
        s = self.meta_shape(fxnode)
        if s is None:
            self.fail(node, "the input's shape was not recorded in the exported program")
        return len(s)

    def act(self, node, v, what="input"):
        if isinstance(v, _Act):
            if v.batch_axis or v.layer_axis:
                self.fail(node, "reads a tensor whose batch is not its first axis (a (T, N, F) sequence or an RNN's "
                                "(1, N, H) state); use batch_first=True, or select / squeeze the state first")
            return str(v)
        if isinstance(v, _Unused):
            self.fail(node, f"uses a secondary output of '{v.node.name}' (indices or statistics)")
        self.fail(node, f"the {what} must be an activation, got a constant")

    def const(self, node, v, what="weight"):
        if isinstance(v, self.torch.Tensor):
            return v.detach().cpu().numpy()
        if isinstance(v, _Act):
            self.fail(node, f"the {what} must be a constant (parameter or buffer), got an activation")
        self.fail(node, f"the {what} must be a tensor, got {v!r}")

    def wconst(self, base, data):
        name = self.g.fresh(base)
        self.g.add_const(name, np.asarray(data, dtype=np.float32))
        return name

    def cname(self, fxarg, node, suffix):
        """Name for a weight: the parameter's name when the argument is a parameter placeholder."""
        if hasattr(fxarg, "name") and fxarg.name in self.fqn:
            return self.fqn[fxarg.name]
        return f"{node.name}.{suffix}"

    # ---- main loop -------------------------------------------------------------------------------------
    def _make_static(self):
        """Re-export at the nominal input shape when the program has dynamic dimensions (TS2EPConverter
        marks every dimension dynamic; a .pt2 may too), so every recorded shape is concrete."""
        torch = self.torch
        sig = self.ep.graph_signature
        phs = [n for n in self.ep.graph.nodes if n.op == "placeholder" and n.name in sig.user_inputs]
        if len(phs) != 1 or self.meta_shape(phs[0]) is None:
            return
        dims = [_concrete(d) for d in self.meta_shape(phs[0])]
        if all(d is not None for d in dims):
            return
        shape = self.input_shape
        if shape is None:
            if any(d is None for d in dims[1:]):
                raise EdgepackError(f"{self.src}: input '{phs[0].name}' has dynamic dimensions "
                                    f"{tuple(d if d is not None else '?' for d in dims)}; pass --input-shape")
            shape = (1,) + tuple(dims[1:])
        try:
            with _quiet(), torch.no_grad():
                self.ep = torch.export.export(self.ep.module(), (torch.zeros(shape),))
        except Exception as e:
            raise EdgepackError(f"{self.src}: cannot specialise the program to input shape {tuple(shape)} "
                                f"({_torch_reason(e)})") from None

    def run(self, fold_bn: bool = True) -> Graph:
        self._make_static()
        sig = self.ep.graph_signature
        consts = {}
        for table in (sig.inputs_to_parameters, sig.inputs_to_buffers, sig.inputs_to_lifted_tensor_constants):
            for ph, fqn in table.items():
                self.fqn[ph] = fqn
                if fqn in self.ep.state_dict:
                    consts[ph] = self.ep.state_dict[fqn]
                elif fqn in self.ep.constants:
                    consts[ph] = self.ep.constants[fqn]
        user_inputs = list(sig.user_inputs)
        outputs = None
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                if node.name in consts:
                    self.env[node.name] = consts[node.name]
                elif node.name in user_inputs:
                    self.placeholder(node, len(user_inputs))
                else:
                    self.fail(node, "an input of unknown kind (not a parameter, buffer or tensor input)")
            elif node.op == "get_attr":
                obj = self.ep.graph_module
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                self.env[node.name] = obj
            elif node.op == "call_function":
                self.call(node)
            elif node.op == "output":
                outputs = node.args[0]
            else:
                self.unsupported(node)
        outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if len(outs) != 1:
            raise EdgepackError(f"{self.src}: the model has {len(outs)} outputs; edgepack supports exactly one")
        v = self.env.get(getattr(outs[0], "name", None))
        if not isinstance(v, _Act):
            raise EdgepackError(f"{self.src}: the model output is not a tensor computed from the input")
        self.g.outputs = [str(v)]
        if len(self.model_input) == 3:
            set_io(self.g, "input", self.model_input, self.input_perm)
        oshape = self.meta_shape(outs[0])
        if oshape is not None and (len(oshape) == 3 or v.batch_axis or v.layer_axis):
            dims = [int(_concrete(d)) for d in oshape]
            b = 1 if (v.batch_axis or v.layer_axis) else 0
            dims[b] = 1
            set_io(self.g, "output", dims, (1, 0, 2) if b else None)
        return finish_graph(self.g, self.src, fold_bn)

    def placeholder(self, node, n_inputs):
        if n_inputs != 1:
            raise EdgepackError(f"{self.src}: the model has {n_inputs} inputs; edgepack supports exactly one")
        s = self.meta_shape(node)
        if s is None:
            raise EdgepackError(f"{self.src}: the input '{node.name}' is not a tensor")
        dims = [_concrete(d) for d in s]
        if self.input_shape is not None:
            if len(dims) != len(self.input_shape) or any(
                    d is not None and d != v for d, v in list(zip(dims, self.input_shape))[1:]):
                raise EdgepackError(f"{self.src}: --input-shape {self.input_shape} disagrees with the model's "
                                    f"input shape {tuple(d if d is not None else '?' for d in dims)}")
            shape = tuple(self.input_shape)
        else:
            if any(d is None for d in dims[1:]):
                raise EdgepackError(f"{self.src}: input '{node.name}' has dynamic dimensions "
                                    f"{tuple(d if d is not None else '?' for d in dims)}; pass --input-shape")
            shape = tuple(dims)
        shape = (1,) + tuple(shape[1:])
        if len(shape) not in (2, 3, 4):
            raise EdgepackError(f"{self.src}: input '{node.name}' has shape {shape}; edgepack supports NCHW, "
                                "(N, C, L) or (N, F) inputs")
        seq_first = len(shape) == 3 and any(  # a (T, N, F) input of an RNN with batch_first=False
            _opname(u.target) in ("lstm", "gru") and not _bind(u.target, u.args, u.kwargs)["batch_first"]
            and u.args[0] is node for u in node.users if u.op == "call_function" and hasattr(u.target, "_schema"))
        if seq_first:
            shape = (dims[0],) + (1,) + tuple(dims[2:]) if self.input_shape is None else \
                tuple(self.input_shape[:1]) + (1,) + tuple(self.input_shape[2:])
        self.model_input = shape
        self.input_perm = (1, 0, 2) if seq_first else None
        self.g.add_tensor(node.name, shape=lift_shape((1, shape[0], shape[2]) if seq_first else shape))
        self.g.inputs = [node.name]
        self.env[node.name] = _Act.of(node.name, batch_axis=1 if seq_first else 0)

    def call(self, node):
        torch = self.torch
        from torch.fx.node import map_aggregate

        def look(a):
            return self.env[a.name] if isinstance(a, torch.fx.Node) else a

        args = map_aggregate(node.args, look)
        kwargs = map_aggregate(node.kwargs, look)
        flat = []
        map_aggregate((args, kwargs), lambda a: flat.append(a))
        has_act = any(isinstance(a, (_Act, _Unused)) for a in flat)
        target = node.target
        name = _opname(target)
        if target is operator.getitem:
            seq, idx = args
            self.env[node.name] = seq[idx]
            return
        if name.startswith(_IGNORED_PREFIXES):
            self.env[node.name] = None
            return
        if name in _SIZE_OPS and has_act:
            # a size of an activation: its recorded value (only reshapes consume it; they use meta shapes)
            self.env[node.name] = node.meta.get("val")
            return
        if not has_act:
            try:
                with torch.no_grad():
                    self.env[node.name] = target(*args, **kwargs)
            except Exception as e:
                self.fail(node, f"cannot evaluate this constant expression ({short_reason(e)})")
            return
        handler = TORCH_OPS.handler(self, name)
        if handler is None or not hasattr(target, "_schema"):
            self.unsupported(node)
        try:
            self.env[node.name] = handler(node, _bind(target, args, kwargs))
        except EdgepackError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
            self.fail(node, f"cannot import this node ({short_reason(e)})")

    def emit(self, op, node, inputs, **attrs):
        out = self.g.fresh(node.name)
        self.g.add_tensor(out)
        self.g.add_node(op, node.name, inputs, [out], **attrs)
        return _Act(out)

    def fx_arg(self, node, i):
        return node.args[i] if i < len(node.args) else None

    # ---- operators -------------------------------------------------------------------------------------
    def _conv(self, node, b, transposed=False):
        x = self.act(node, b["input"])
        w = self.const(node, b["weight"])
        if w.ndim not in (3, 4):
            self.fail(node, "only 1-D and 2-D convolution is supported")
        one = w.ndim == 3
        if one:  # Conv1d: the 2-D convolution with H = 1
            w = w[:, :, None, :]
        stride, dil, groups = _hw(b["stride"], one, 1), _hw(b["dilation"], one, 1), int(b["groups"])
        pad = b["padding"]
        if transposed:
            if isinstance(pad, str):
                self.fail(node, f"padding '{pad}' is not supported for a transposed convolution")
            ph, pw = _hw(pad, one, 0)
            ins = [x, self.wconst(self.cname(self.fx_arg(node, 1), node, "weight"), w)]
            if b["bias"] is not None:
                ins.append(self.wconst(self.cname(self.fx_arg(node, 2), node, "bias"),
                                       self.const(node, b["bias"], "bias")))
            return self.emit("conv_transpose2d", node, ins, strides=stride, pads=(ph, pw, ph, pw),
                             output_padding=_hw(b["output_padding"], one, 0), dilations=dil, group=groups)
        if isinstance(pad, str):
            if pad == "valid":
                pads = (0, 0, 0, 0)
            elif pad == "same":
                th, tw = (dil[0] * (w.shape[2] - 1), dil[1] * (w.shape[3] - 1))
                pads = (th // 2, tw // 2, th - th // 2, tw - tw // 2)
            else:
                self.fail(node, f"padding '{pad}' is not supported")
        else:
            ph, pw = _hw(pad, one, 0)
            pads = (ph, pw, ph, pw)
        ins = [x, self.wconst(self.cname(self.fx_arg(node, 1), node, "weight"), w)]
        if b["bias"] is not None:
            bias = self.const(node, b["bias"], "bias")
            ins.append(self.wconst(self.cname(self.fx_arg(node, 2), node, "bias"), bias))
        return self.emit("conv2d", node, ins, strides=stride, pads=pads, dilations=dil, group=groups)

    @TORCH_OPS.register("conv2d", "conv1d", "_convolution_mode", weights=CONV_WEIGHTS,
                        note="1-D and 2-D; any groups (depthwise, grouped), dilation")
    def op_conv2d(self, node, b):
        return self._conv(node, b)

    @TORCH_OPS.register("conv_transpose2d", "conv_transpose1d", weights="int8",
                        note="stride, padding, output_padding, dilation; groups 1")
    def op_conv_transpose2d(self, node, b):
        return self._conv(node, b, transposed=True)


    @TORCH_OPS.register("convolution", "_convolution", weights=CONV_WEIGHTS, note="1-D and 2-D, also transposed")
    def op_convolution(self, node, b):
        return self._conv(node, b, transposed=bool(b["transposed"]))

    def _bn(self, node, b, eps):
        x = self.act(node, b["input"])
        s = self.meta_shape(node.args[0])
        c = _concrete(s[1]) if s is not None and len(s) > 1 else None
        names = []
        for key, i, default in (("weight", 1, 1.0), ("bias", 2, 0.0), ("running_mean", 3, None),
                                ("running_var", 4, None)):
            v = b[key]
            if v is None:
                if default is None:
                    self.fail(node, "batch normalization without running statistics (training mode)")
                if c is None:
                    self.fail(node, "the number of channels is not known")
                data = np.full((c,), default, dtype=np.float32)
            else:
                data = self.const(node, v, key)
            names.append(self.wconst(self.cname(self.fx_arg(node, i), node, key), data))
        return self.emit("batchnorm", node, [x] + names, eps=float(eps))

    @TORCH_OPS.register("batch_norm", note="folded into the conv / dense before it, else a per-channel affine (1x1 depthwise conv)")
    def op_batch_norm(self, node, b):
        if b["training"]:
            self.fail(node, "batch normalization in training mode; call model.eval() before export")
        return self._bn(node, b, b["eps"])

    @TORCH_OPS.register("_native_batch_norm_legit_no_training", note="as batch_norm")
    def op__native_batch_norm_legit_no_training(self, node, b):
        return (self._bn(node, b, b["eps"]), _Unused(node), _Unused(node))

    @TORCH_OPS.register("native_batch_norm", note="as batch_norm, inference mode")
    def op_native_batch_norm(self, node, b):
        if b["training"]:
            self.fail(node, "batch normalization in training mode; call model.eval() before export")
        return (self._bn(node, b, b["eps"]), _Unused(node), _Unused(node))

    @TORCH_OPS.register("relu", "relu_", note="fused into the conv / dense / add before it, else a clamp")
    def op_relu(self, node, b):
        return self.emit("relu", node, [self.act(node, b["self"])])


    @TORCH_OPS.register("sign", note="binary activation (sign(0) = +1)")
    def op_sign(self, node, b):
        return self.emit("sign", node, [self.act(node, b["self"])])

    def _clip(self, node, x, lo, hi):
        def num(v, what):
            if v is None:
                return None
            if isinstance(v, self.torch.Tensor):
                if v.numel() != 1:
                    self.fail(node, f"a per-element {what} is not supported")
                v = v.item()
            return float(v)
        return self.emit("clip", node, [self.act(node, x)], min=num(lo, "minimum"), max=num(hi, "maximum"))

    @TORCH_OPS.register("hardtanh", "hardtanh_", note="as clamp")
    def op_hardtanh(self, node, b):
        return self._clip(node, b["self"], b["min_val"], b["max_val"])


    @TORCH_OPS.register("relu6", "relu6_", note="as clamp")
    def op_relu6(self, node, b):
        return self._clip(node, b["self"], 0.0, 6.0)

    @TORCH_OPS.register("clamp", "clamp_", note="scalar bounds; fused into the conv / dense / add before it, else a clamp")
    def op_clamp(self, node, b):
        return self._clip(node, b["self"], b["min"], b["max"])

    @TORCH_OPS.register("clamp_min", "clamp_min_", note="as clamp")
    def op_clamp_min(self, node, b):
        return self._clip(node, b["self"], b["min"], None)

    @TORCH_OPS.register("clamp_max", "clamp_max_", note="as clamp")
    def op_clamp_max(self, node, b):
        return self._clip(node, b["self"], None, b["max"])

    def _pool_common(self, node, b):
        one = self.rank(node.args[0], node) == 3  # MaxPool1d / AvgPool1d: the 2-D pool with H = 1
        kernel = _hw(b["kernel_size"], one, 1)
        stride = _hw(b["stride"], one, 1) if b["stride"] not in (None, [], ()) else kernel
        ph, pw = _hw(b["padding"], one, 0)
        dil = _hw(b.get("dilation", 1), one, 1)
        pads = (ph, pw, ph, pw)
        if b.get("ceil_mode"):
            s = lift_shape(self.meta_shape(node.args[0]) or ())
            same = len(s) == 4 and all(
                _concrete(n) is not None and (_concrete(n) + 2 * p - d * (k - 1) - 1) % st == 0
                for n, k, st, p, d in zip(s[2:], kernel, stride, (ph, pw), dil))
            if not same:
                self.fail(node, "ceil_mode=True is not supported; use ceil_mode=False or pad the input")
        return kernel, stride, pads, dil

    @TORCH_OPS.register("max_pool2d", "max_pool1d", note="dilation too")
    def op_max_pool2d(self, node, b):
        x = self.act(node, b["self"])
        kernel, stride, pads, dil = self._pool_common(node, b)
        return self.emit("maxpool", node, [x], kernel=kernel, strides=stride, pads=pads, dilations=dil)


    @TORCH_OPS.register("max_pool2d_with_indices", "max_pool1d_with_indices", note="the indices unused")
    def op_max_pool2d_with_indices(self, node, b):
        return (self.op_max_pool2d(node, b), _Unused(node))


    @TORCH_OPS.register("avg_pool2d", "avg_pool1d")
    def op_avg_pool2d(self, node, b):
        x = self.act(node, b["self"])
        if b.get("divisor_override") is not None:
            self.fail(node, "divisor_override is not supported")
        kernel, stride, pads, _ = self._pool_common(node, b)
        return self.emit("avgpool", node, [x], kernel=kernel, strides=stride, pads=pads,
                         count_include_pad=bool(b["count_include_pad"]))

    @TORCH_OPS.register("adaptive_avg_pool1d", note="to 1 (a global average) or to its own length")
    def op_adaptive_avg_pool1d(self, node, b):
        x = self.act(node, b["self"])
        s = self.meta_shape(node.args[0])
        if s is None or len(s) != 3:
            self.fail(node, "expects a 3-D (N, C, L) input")
        size = int(list(b["output_size"])[0])
        if size == 1:
            return self.emit("global_avgpool", node, [x])
        if _concrete(s[2]) == size:
            return self.emit("identity", node, [x])
        self.fail(node, f"adaptive average pooling to {size} from {s[2]} is not supported; only to 1")

    @TORCH_OPS.register("adaptive_avg_pool2d", "_adaptive_avg_pool2d", note="to (1, 1)")
    def op_adaptive_avg_pool2d(self, node, b):
        x = self.act(node, b["self"])
        s = self.meta_shape(node.args[0])
        if s is None or len(s) != 4:
            self.fail(node, "expects a 4-D NCHW input")
        size = [v if v is not None else s[2 + i] for i, v in enumerate(list(b["output_size"]) * (
            2 if len(b["output_size"]) == 1 else 1))]
        if [int(v) for v in size] == [1, 1]:
            return self.emit("global_avgpool", node, [x])
        if [_concrete(v) for v in s[2:]] == [int(v) for v in size]:
            return self.emit("identity", node, [x])
        self.fail(node, f"adaptive average pooling to {tuple(size)} from {tuple(s[2:])} is not supported; only "
                        "to (1, 1)")


    @TORCH_OPS.register("mean", note="over H and W only")
    def op_mean(self, node, b):
        if "dim" not in b:
            self.unsupported(node)
        x = self.act(node, b["self"])
        r = self.rank(node.args[0], node)
        dims = sorted(int(d) % r for d in (b["dim"] or []))
        if (r, dims) not in ((4, [2, 3]), (3, [2])):
            self.fail(node, f"only a mean over H and W (dims [2, 3]) of an NCHW tensor or over L (dim 2) of an "
                            f"(N, C, L) tensor is supported, got {list(b['dim'] or [])}")
        y = self.emit("global_avgpool", node, [x])
        if not b["keepdim"]:
            out = self.g.fresh(node.name + "_flatten")
            self.g.add_node("flatten", node.name + "_flatten", [str(y)], [out], axis=1)
            y = _Act(out)
        return y

    def _operand(self, node, v, i):
        """An activation, or a constant (tensor or Python number) added to the graph."""
        if isinstance(v, (_Act, _Unused)):
            return self.act(node, v)
        if isinstance(v, self.torch.Tensor):
            return self.wconst(self.cname(self.fx_arg(node, i), node, "const"), self.const(node, v))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return self.wconst(f"{node.name}.const", np.float32(v))
        self.fail(node, f"operand {v!r} is not supported")

    def _binary(self, node, op, a, o):
        ins = [self._operand(node, a, 0), self._operand(node, o, 1)]
        if all(self.g.tensors[t].is_const for t in ins):
            self.fail(node, "both operands are constants")
        return self.emit(op, node, ins)

    @TORCH_OPS.register("add", "add_", note="broadcasting; a constant added after a conv / dense becomes its bias; "
                        + CONST_INT8)
    @TORCH_OPS.register("sub", "sub_", note="broadcasting; " + CONST_INT8)
    @TORCH_OPS.register("rsub", note="other - self; " + CONST_INT8)
    @TORCH_OPS.register("mul", "mul_", note="broadcasting (per-channel scaling: squeeze-excite); " + CONST_INT8)
    @TORCH_OPS.register(*_COMPARE, note="inside a chain of element-wise ops on one input (one lookup table)")
    def op_binary(self, node, b):
        name = _opname(node.target).rstrip("_")
        if b.get("alpha") not in (None, 1, 1.0):
            self.fail(node, f"{name} with alpha != 1 is not supported")
        a, o = (b["other"], b["self"]) if name == "rsub" else (b["self"], b["other"])
        return self._binary(node, {"rsub": "sub", **_COMPARE}.get(name, name), a, o)

    @TORCH_OPS.register("where", note="inside a chain of element-wise ops on one input (one lookup table)")
    def op_where(self, node, b):
        ins = [self._operand(node, b[k], i) for i, k in enumerate(("condition", "self", "other"))]
        return self.emit("where", node, ins)

    @TORCH_OPS.register("div", "div_", note="by a constant (a multiplication by its reciprocal)")
    def op_div(self, node, b):
        if b.get("rounding_mode") is not None:
            self.fail(node, f"division with rounding_mode={b['rounding_mode']!r} is not supported")
        d = b["other"]
        if isinstance(d, (_Act, _Unused)):
            self.fail(node, "only a division by a constant is supported")
        d = np.asarray(self.const(node, d) if isinstance(d, self.torch.Tensor) else d, np.float64)
        if np.any(d == 0):
            self.fail(node, "division by zero")
        return self.emit("mul", node, [self.act(node, b["self"]), self.wconst(f"{node.name}.reciprocal", 1.0 / d)])

    @TORCH_OPS.register(*_UNARY, note="int8 lookup table (a chain of element-wise ops on one input: one table)")
    def op_unary(self, node, b):
        op, amap = _UNARY[_opname(node.target)]
        if op == "elu" and (b.get("scale", 1) != 1 or b.get("input_scale", 1) != 1):
            self.fail(node, "elu with scale or input_scale != 1 is not supported")
        attrs = {k: b[arg] for k, arg in amap.items()}
        attrs = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                 for k, v in attrs.items()}
        return self.emit(op, node, [self.act(node, b["self"])], **attrs)

    @TORCH_OPS.register("pow", note="a constant scalar exponent: int8 lookup table")
    def op_pow(self, node, b):
        e = b.get("exponent")
        if isinstance(e, self.torch.Tensor) and e.numel() == 1:
            e = e.item()
        if not isinstance(e, (int, float)) or not isinstance(b.get("self"), _Act):
            self.fail(node, "only an activation to a constant scalar power is supported")
        return self.emit("pow", node, [self.act(node, b["self"])], exponent=float(e))

    @TORCH_OPS.register("prelu", "_prelu_kernel", note="per-channel slopes (int8 per-tensor), one requantization "
                        "per sign; a single slope is a lookup table")
    def op_prelu(self, node, b):
        x = self.act(node, b["self"])
        slope = np.asarray(self.const(node, b["weight"], "slope"), np.float64).reshape(-1)
        if slope.size == 1:
            return self.emit("leaky_relu", node, [x], alpha=float(slope[0]))
        return self.emit("prelu", node, [x, self.wconst(self.cname(self.fx_arg(node, 1), node, "weight"), slope)])

    @TORCH_OPS.register("cat", "concat", "concatenate", note="any dim but the batch; inputs of other scales "
                        "requantized; producers write into their slice where the layout allows")
    def op_cat(self, node, b):
        xs = [self.act(node, v) for v in b["tensors"]]
        if len(xs) == 1:
            return self.emit("identity", node, xs)
        return self.emit("concat", node, xs, axis=int(b["dim"]))

    def _slices(self, node, x, dim, sizes):
        """Consecutive slices of ``x`` along ``dim`` with the given sizes (split / chunk / unbind-like ops)."""
        outs, start = [], 0
        for i, k in enumerate(sizes):
            out = self.g.fresh(f"{node.name}_{i}")
            self.g.add_tensor(out)
            self.g.add_node("slice", f"{node.name}_{i}", [x], [out], axis=dim, start=start, end=start + k, step=1)
            outs.append(_Act(out))
            start += k
        return outs

    @TORCH_OPS.register("split", "split_with_sizes", "chunk", "unsafe_split", "unsafe_chunk",
                        "unsafe_split_with_sizes", "tensor_split", note="into slices along any dim but the batch")
    def op_split(self, node, b):
        x = self.act(node, b["self"])
        vals = node.meta.get("val")
        if not isinstance(vals, (list, tuple)) or not vals:
            self.fail(node, "the output shapes were not recorded in the exported program")
        r = self.rank(node.args[0], node)
        dim = int(b.get("dim", 0)) % r
        sizes = [_concrete(v.shape[dim]) for v in vals]
        if any(v is None for v in sizes):
            self.fail(node, "split sizes are dynamic")
        return self._slices(node, x, dim, sizes)

    @TORCH_OPS.register("slice", note="any dim but the batch, positive steps")
    def op_slice(self, node, b):
        x = self.act(node, b["self"])
        sx, sy = self.meta_shape(node.args[0]), self.meta_shape(node)
        if sx is not None and sy is not None and [_concrete(v) for v in sx] == [_concrete(v) for v in sy] \
                and (b.get("step") or 1) == 1:
            return self.emit("identity", node, [x])  # a whole-axis slice (TorchScript's `:`)
        start, end, step = b.get("start"), b.get("end"), b.get("step") or 1
        r = self.rank(node.args[0], node)
        start = 0 if start is None else int(start)
        end = None if end is None or int(end) >= 2**62 else int(end)
        return self.emit("slice", node, [x], axis=int(b["dim"]) % r, start=start, end=end, step=int(step))

    @TORCH_OPS.register("narrow", note="as slice")
    def op_narrow(self, node, b):
        x = self.act(node, b["self"])
        start = int(b["start"])
        return self.emit("slice", node, [x], axis=int(b["dim"]) % self.rank(node.args[0], node), start=start,
                         end=start + int(b["length"]), step=1)

    def _reshape(self, node):
        x = self.act(node, self.env[node.args[0].name])
        sx, sy = self.meta_shape(node.args[0]), self.meta_shape(node)
        if sx is None or sy is None:
            self.fail(node, "the shapes were not recorded in the exported program")
        same_batch = len(sy) > 0 and len(sx) > 0 and (
            _concrete(sx[0]) == _concrete(sy[0]) if _concrete(sx[0]) is not None else str(sx[0]) == str(sy[0]))
        rest = [_concrete(v) for v in sy[1:]]
        if not same_batch or any(v is None for v in rest):
            self.fail(node, f"a reshape from {tuple(sx)} to {tuple(sy)} that changes the batch dimension or "
                            "has dynamic sizes is not supported")
        return self.emit("reshape", node, [x], shape=lift_shape([1] + rest))

    @TORCH_OPS.register("flatten")
    def op_flatten(self, node, b):
        return self._reshape(node)

    @TORCH_OPS.register("view", "reshape", "_unsafe_view", "unsqueeze", note="keeping the batch; a spatial tensor only flattened before a dense layer")
    def op_view(self, node, b):
        return self._reshape(node)


    @TORCH_OPS.register("squeeze", note="keeping the batch (a reshape); h_n.squeeze(0) of a single-layer RNN")
    def op_squeeze(self, node, b):
        v = b["self"]
        if isinstance(v, _Act) and v.layer_axis:  # h_n.squeeze(0) of a single-layer RNN
            dims = b.get("dim")
            dims = [dims] if isinstance(dims, int) else list(dims) if dims is not None else [0]
            if [int(d) % 3 for d in dims] == [0]:
                return _Act(str(v))
        return self._reshape(node)

    def _transpose(self, node, x, perm):
        r = self.rank(node.args[0], node)
        perm = [int(p) % r for p in perm]
        if perm[0] != 0:
            self.fail(node, f"a permutation {perm} that moves the batch dimension is not supported")
        return self.emit("transpose", node, [self.act(node, x)], perm=lift_perm(perm))

    @TORCH_OPS.register("permute", note="folded into the boundary or the dense weights where the NHWC memory order allows, else one transpose_s8 copy")
    def op_permute(self, node, b):
        return self._transpose(node, b["self"], b["dims"])

    @TORCH_OPS.register("transpose", note="as permute")
    def op_transpose(self, node, b):
        r = self.rank(node.args[0], node)
        perm = list(range(r))
        a0, a1 = int(b["dim0"]) % r, int(b["dim1"]) % r
        v = b["self"]
        if r == 3 and {a0, a1} == {0, 1} and isinstance(v, _Act) and not v.layer_axis:
            return _Act.of(str(v), batch_axis=1 - v.batch_axis)  # (N, T, F) <-> (T, N, F): the graph keeps N first
        perm[a0], perm[a1] = perm[a1], perm[a0]
        return self._transpose(node, b["self"], perm)

    @TORCH_OPS.register("swapaxes", note="as permute")
    def op_swapaxes(self, node, b):
        return self.op_transpose(node, {"self": b["self"], "dim0": b["axis0"], "dim1": b["axis1"]})

    def _rnn(self, node, b, cell, gates):
        if b["num_layers"] != 1 or b["bidirectional"] or not b["has_biases"]:
            self.fail(node, "only a single-layer, unidirectional RNN with biases is supported")
        v = b["input"]
        if not isinstance(v, _Act) or v.layer_axis or v.batch_axis != (0 if b["batch_first"] else 1):
            self.fail(node, "the input must be the (N, T, F) sequence (batch_first=True) or (T, N, F) "
                            "(batch_first=False)")
        hx = b["hx"] if isinstance(b["hx"], (list, tuple)) else [b["hx"]]
        for h in hx:
            if not isinstance(h, self.torch.Tensor) or bool(h.abs().max() > 0):
                self.fail(node, "only a zero initial state is supported")
        w_ih, w_hh, b_ih, b_hh = (self.const(node, t, "parameter") for t in b["params"])
        hidden = w_hh.shape[1]
        names = [self.wconst(f"{node.name}.{k}", t) for k, t in
                 (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh))]
        seq = self.emit(cell, node, [str(v)] + names, hidden=int(hidden), last=False)
        out = _Act.of(str(seq), batch_axis=v.batch_axis)
        last = self.g.fresh(node.name + "_last")
        self.g.add_tensor(last)
        self.g.add_node(cell, node.name + "_last", [str(v)] + names, [last], hidden=int(hidden), last=True)
        self.rnn_last[str(seq)] = last
        state = _Act.of(last, layer_axis=True)
        return (out, state, _Unused(node)) if gates == 4 else (out, state)

    @TORCH_OPS.register("lstm", weights="int8", note="single layer, unidirectional, zero initial state (TFLite integer LSTM)")
    def op_lstm(self, node, b):
        return self._rnn(node, b, "lstm", 4)

    @TORCH_OPS.register("gru", weights="int8", note="single layer, unidirectional, zero initial state (int8, TFLite LSTM conventions)")
    def op_gru(self, node, b):
        return self._rnn(node, b, "gru", 3)

    @TORCH_OPS.register("select", note="the last step of an RNN output, or its final state")
    def op_select(self, node, b):
        """x[-1] / x[0] of an RNN's (1, N, H) final state; the last step of an RNN's output sequence."""
        v, r = b["self"], self.rank(node.args[0], node)
        dim, index = int(b["dim"]) % r, int(b["index"])
        if isinstance(v, _Act) and v.layer_axis and dim == 0 and index in (0, -1):
            return _Act(str(v))
        steps = _concrete(self.meta_shape(node.args[0])[dim]) if self.meta_shape(node.args[0]) else None
        if isinstance(v, _Act) and str(v) in self.rnn_last and r == 3 and dim == 1 - v.batch_axis \
                and index in (-1, (steps or 0) - 1):
            return _Act(self.rnn_last[str(v)])
        self.fail(node, "select is supported only for the last step of an RNN's output or its final state")

    @TORCH_OPS.register("channel_shuffle", "native_channel_shuffle", note="one gather")
    def op_channel_shuffle(self, node, b):
        return self.emit("channel_shuffle", node, [self.act(node, b["self"])], groups=int(b["groups"]))


    def _upsample(self, node, b, mode, coord, nearest="floor"):
        x = self.act(node, b.get("input", b.get("self")))
        one = self.rank(node.args[0], node) == 3
        ys = self.meta_shape(node)
        if ys is None or any(_concrete(d) is None for d in ys):
            self.fail(node, "the output shape was not recorded in the exported program")
        size = lift_shape([_concrete(d) for d in ys])[2:]
        sf = b.get("scale_factors")
        if sf:
            sf = [float(v) for v in sf]
            scales = (1.0, sf[0]) if one else (sf[0], sf[-1])
        elif b.get("scales_h") is not None or b.get("scales_w") is not None:
            scales = (b.get("scales_h"), b.get("scales_w"))
        elif b.get("scales") is not None:
            scales = (1.0, float(b["scales"]))
        else:
            scales = None
        if mode == "bilinear" and b.get("align_corners"):
            coord = "align_corners"
        return self.emit("resize", node, [x], mode=mode, size=tuple(size), coord=coord, nearest=nearest,
                         scales=scales)

    @TORCH_OPS.register("upsample_nearest2d", "upsample_nearest1d", note="any integer scale, TFLite int8")
    def op_upsample_nearest2d(self, node, b):  # PyTorch 'nearest': src = floor(dst / scale)
        return self._upsample(node, b, "nearest", "asymmetric")

    @TORCH_OPS.register("_upsample_nearest_exact2d", "_upsample_nearest_exact1d", note="any integer scale, TFLite int8 half-pixel centres")
    def op__upsample_nearest_exact2d(self, node, b):  # 'nearest-exact': src = floor((dst + 0.5) / scale)
        return self._upsample(node, b, "nearest", "half_pixel", "round_prefer_ceil")

    @TORCH_OPS.register("upsample_bilinear2d", "upsample_linear1d", note="align_corners True / False, TFLite int8 (10-bit fixed point)")
    def op_upsample_bilinear2d(self, node, b):  # align_corners=False: half-pixel centres
        return self._upsample(node, b, "bilinear", "half_pixel")


    def _dense(self, node, x, w, bias, wname, bname):
        if w.ndim != 2:
            self.fail(node, "only a 2-D weight is supported")
        ins = [self.act(node, x), self.wconst(wname, w)]
        if bias is not None:
            ins.append(self.wconst(bname, bias))
        return self.emit("dense", node, ins)

    def _flat_input(self, node):
        r = self.rank(node.args[0], node)
        if r > 2:
            self.fail(node, f"a linear layer over the last axis of a {r}-D tensor is not supported; flatten the "
                            "input to (N, F) first")

    @TORCH_OPS.register("linear", weights=DENSE_WEIGHTS)
    def op_linear(self, node, b):
        self._flat_input(node)
        w = self.const(node, b["weight"])
        bias = self.const(node, b["bias"], "bias") if b["bias"] is not None else None
        return self._dense(node, b["input"], w, bias, self.cname(self.fx_arg(node, 1), node, "weight"),
                           self.cname(self.fx_arg(node, 2), node, "bias"))

    @TORCH_OPS.register("addmm", weights=DENSE_WEIGHTS)
    def op_addmm(self, node, b):
        w = self.const(node, b["mat2"]).astype(np.float64).T * float(b["alpha"])
        c = self.const(node, b["self"], "bias").astype(np.float64) * float(b["beta"])
        if c.size not in (1, w.shape[0]) or c.ndim > 2:
            self.fail(node, f"bias of shape {c.shape} is not supported")
        c = np.broadcast_to(c.reshape(-1), (w.shape[0],))
        return self._dense(node, b["mat1"], w, c, f"{node.name}.weight",
                           self.cname(self.fx_arg(node, 0), node, "bias"))

    @TORCH_OPS.register("mm", weights=DENSE_WEIGHTS, note="with a constant matrix")
    def op_mm(self, node, b):
        w = self.const(node, b["mat2"]).T
        return self._dense(node, b["self"], w, None, f"{node.name}.weight", "")

    @TORCH_OPS.register("matmul", weights=DENSE_WEIGHTS, note="with a constant 2-D matrix")
    def op_matmul(self, node, b):
        self._flat_input(node)
        w = self.const(node, b["other"])
        if w.ndim != 2:
            self.fail(node, "only a product with a constant 2-D matrix is supported")
        return self._dense(node, b["self"], w.T, None, f"{node.name}.weight", "")

    @TORCH_OPS.register("softmax", "_softmax", note="last axis of (1, N), as the last op")
    def op_softmax(self, node, b):
        x = self.act(node, b["self"])
        r = self.rank(node.args[0], node)
        d = int(b["dim"]) % r
        return self.emit("softmax", node, [x], axis=-1 if d == r - 1 else lift_axis(d, r))


    @TORCH_OPS.register("dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout",
                        "alpha_dropout_", "feature_alpha_dropout", "feature_alpha_dropout_",
                        note="dropped (eval mode only)")
    def op_dropout(self, node, b):
        if b.get("train"):
            self.fail(node, "dropout in training mode; call model.eval() before export")
        return self.emit("identity", node, [self.act(node, b.get("input", b.get("self")))])

    @TORCH_OPS.register("native_dropout", note="dropped (eval mode only)")
    def op_native_dropout(self, node, b):
        if b.get("train"):
            self.fail(node, "dropout in training mode; call model.eval() before export")
        return (self.emit("identity", node, [self.act(node, b["input"])]), _Unused(node))

    @TORCH_OPS.register("clone", "contiguous", "alias", "detach", "detach_", "lift_fresh_copy", "identity",
                        note="dropped")
    def _identity(self, node, b):
        return self.emit("identity", node, [self.act(node, b["self"])])

    @TORCH_OPS.register("to", "_to_copy", "type_as", note="dropped when float32 stays float32")
    def op_to(self, node, b):
        x = b["self"]
        vin, vout = node.args[0].meta.get("val"), node.meta.get("val")
        if getattr(vin, "dtype", None) != self.torch.float32 or getattr(vout, "dtype", None) != self.torch.float32:
            self.fail(node, f"a conversion from {getattr(vin, 'dtype', '?')} to {getattr(vout, 'dtype', '?')} is "
                            "not supported; only float32 to float32")
        return self.emit("identity", node, [self.act(node, x)])

    def _pad(self, node, x, pad, value):
        x = self.act(node, x)
        pad = [int(p) for p in pad]
        r = self.rank(node.args[0], node)
        if r == 3 and len(pad) == 2:  # a pad of L of an (N, C, L) tensor: of W of its (N, C, 1, L) form
            r, pad = 4, pad + [0, 0]
        pad = pad + [0] * (6 - len(pad))
        if r != 4 or len(pad) > 6 and any(pad[6:]) or min(pad) < 0:
            self.fail(node, f"pad {pad} is not supported; only non-negative padding of C, H and W of NCHW")
        left, right, top, bottom, cf, cb = pad[:6]
        return self.emit("pad", node, [x], pads=(top, left, bottom, right), channel_pads=(cf, cb),
                         value=float(value or 0.0))

    @TORCH_OPS.register("pad", note="constant mode, any value, H / W / C; a zero pad before a conv or average pool "
                        "is merged into it")
    def op_pad(self, node, b):
        if b["mode"] != "constant":
            self.fail(node, f"pad mode '{b['mode']}' is not supported; only constant padding")
        return self._pad(node, b["self"], b["pad"], b["value"])

    @TORCH_OPS.register("constant_pad_nd", note="as pad")
    def op_constant_pad_nd(self, node, b):
        return self._pad(node, b["self"], b["pad"], b["value"])
