"""A trainable PyTorch module that runs a float-dialect :class:`~edgepack.graph.Graph`.

Training-time tools that must work on a model file alone (a ``.pt2``, ``.pt`` or ``.onnx`` with no Python
class at hand), such as Taylor pruning, import the model into edgepack's one graph IR with its batchnorms kept
(``load_model(path, fold_bn=False)``), run and fine-tune it as a :class:`TorchGraph`, change the graph, and
write it back out as a ``.pt2`` / ``.onnx`` that every importer (edgepack's, PyTorch's) reads.

* Every constant of the graph becomes a tensor of the module: conv / dense weights and biases and batchnorm
  gamma / beta are ``nn.Parameter`` s, batchnorm running mean / var are buffers (updated in train mode with
  momentum 0.1, as ``nn.BatchNorm2d``).
* :attr:`TorchGraph.gates` maps activation tensor names to 1-D tensors that multiply that activation per
  channel (axis 1): the hook Taylor pruning scores through. Gates are not parameters of the module.
* ``forward(x, logits=True)`` stops before a final softmax, so a classifier ending in softmax trains on logits.
* :meth:`TorchGraph.to_graph` returns a copy of the graph holding the module's current values.

The op semantics are those of :mod:`edgepack.reference.float_exec` (the numpy float executor): same NCHW
layout, (top, left, bottom, right) pads, sign(0) = +1.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EdgepackError
from ..frontend import short_reason
from ..frontend.torch_frontend import _quiet
from ..graph import Graph

__all__ = ["TorchGraph", "save_model"]


def _sym_pads(pads):
    t, l, b, r = pads
    return (t, l) if (t, l) == (b, r) else None


class TorchGraph(nn.Module):
    """PyTorch twin of a float-dialect graph (see the module docstring)."""

    def __init__(self, g: Graph):
        super().__init__()
        self.graph = g
        self.params = nn.ParameterDict()
        self._key: dict[str, str] = {}
        self._buffers_of: dict[str, str] = {}
        stats = set()
        for n in g.nodes:
            if n.op == "batchnorm":
                stats.update(n.inputs[3:5])
        used = set()
        for n in g.nodes:
            for t in n.inputs:
                if t in self._key or not g.tensors[t].is_const:
                    continue
                key = re.sub(r"\W", "_", t) or "t"
                while key in used:
                    key += "_"
                used.add(key)
                self._key[t] = key
                data = torch.from_numpy(np.array(g.tensors[t].data, dtype=np.float32, order="C"))  # a writable copy
                if t in stats:
                    self.register_buffer("s_" + key, data.clone())
                    self._buffers_of[t] = "s_" + key
                else:
                    self.params[key] = nn.Parameter(data.clone())
        self.gates: dict[str, torch.Tensor] = {}
        self.bn_momentum = 0.1

    # ---- access -------------------------------------------------------------------------------------
    def value(self, tensor: str) -> torch.Tensor:
        """The module's tensor for a graph constant."""
        if tensor in self._buffers_of:
            return getattr(self, self._buffers_of[tensor])
        return self.params[self._key[tensor]]

    def to_graph(self) -> Graph:
        """A copy of the graph whose constants hold the module's current values (float32)."""
        g = copy.deepcopy(self.graph)
        for t in self._key:
            g.tensors[t].data = self.value(t).detach().cpu().numpy().astype(np.float32).copy()
        return g

    # ---- run ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        g = self.graph
        vals = {g.inputs[0]: x}
        last = g.nodes[-1]
        for n in g.nodes:
            if logits and n is last and n.op == "softmax":
                return vals[n.inputs[0]]
            args = [vals[t] if t in vals else self.value(t) for t in n.inputs]
            y = getattr(self, "_op_" + n.op)(n, *args)
            gate = self.gates.get(n.outputs[0])
            if gate is not None:
                y = y * gate.reshape((1, -1) + (1,) * (y.dim() - 2))
            vals[n.outputs[0]] = y
        return vals[g.outputs[0]]

    def _op_conv2d(self, n, x, w, b=None):
        a = n.attrs
        pads = tuple(a.get("pads", (0, 0, 0, 0)))
        sym = _sym_pads(pads)
        if sym is None:
            t, l, bo, r = pads
            x = F.pad(x, (l, r, t, bo))
            sym = (0, 0)
        return F.conv2d(x, w, b, tuple(a.get("strides", (1, 1))), sym, tuple(a.get("dilations", (1, 1))),
                        a.get("group", 1))

    def _op_batchnorm(self, n, x, gamma, beta, mean, var):
        return F.batch_norm(x, mean, var, gamma, beta, self.training, self.bn_momentum, n.attrs.get("eps", 1e-5))

    def _op_relu(self, n, x):
        return F.relu(x)

    def _op_sign(self, n, x):
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    def _op_clip(self, n, x):
        return torch.clamp(x, n.attrs.get("min"), n.attrs.get("max"))

    def _pool_args(self, n):
        a = n.attrs
        kernel = tuple(a["kernel"])
        strides = tuple(a.get("strides") or kernel)
        return kernel, strides, tuple(a.get("pads", (0, 0, 0, 0)))

    def _op_maxpool(self, n, x):
        kernel, strides, pads = self._pool_args(n)
        sym = _sym_pads(pads)
        if sym is None:
            t, l, b, r = pads
            x = F.pad(x, (l, r, t, b), value=float("-inf"))
            sym = (0, 0)
        return F.max_pool2d(x, kernel, strides, sym)

    def _op_avgpool(self, n, x):
        kernel, strides, pads = self._pool_args(n)
        cip = n.attrs.get("count_include_pad", True)
        sym = _sym_pads(pads)
        if sym is None:
            if not cip:
                raise EdgepackError(f"node '{n.name}' (avgpool): asymmetric padding that is not counted is not "
                                    "supported for training")
            t, l, b, r = pads
            x = F.pad(x, (l, r, t, b))
            sym = (0, 0)
        return F.avg_pool2d(x, kernel, strides, sym, count_include_pad=cip)

    def _op_global_avgpool(self, n, x):
        return F.adaptive_avg_pool2d(x, 1)

    def _op_add(self, n, a, b):
        return a + b

    def _op_flatten(self, n, x):
        return torch.flatten(x, n.attrs.get("axis", 1))

    def _op_reshape(self, n, x):
        return x.reshape((x.shape[0],) + tuple(n.attrs["shape"])[1:])

    def _op_dense(self, n, x, w, b=None):
        return F.linear(x, w, b)

    def _op_softmax(self, n, x):
        return F.softmax(x, dim=n.attrs.get("axis", -1))


def save_model(net: TorchGraph, path, example: torch.Tensor | None = None) -> Path:
    """Write ``net`` (in eval mode, without gates) as ``.pt2`` (torch.export.save) or ``.onnx`` (the dynamo
    exporter). The file is written to a temporary name first and renamed, so a failure leaves an existing
    file untouched."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pt2", ".onnx"):
        raise EdgepackError(f"{path}: the output model must be .pt2 or .onnx")
    g = net.graph
    if example is None:
        example = torch.zeros(g.tensors[g.inputs[0]].shape)
    was_training, gates = net.training, net.gates
    net.eval()
    net.gates = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=path.parent, prefix=f".{path.stem}.")
    os.close(fd)
    try:
        with torch.no_grad(), _quiet():
            if suffix == ".pt2":
                ep = torch.export.export(net, (example,))
                torch.export.save(ep, tmp)
            else:
                torch.onnx.export(net, (example,), tmp, dynamo=True, verbose=False)
        os.replace(tmp, path)
    except Exception as e:
        raise EdgepackError(f"{path}: could not write the model ({short_reason(e)})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        net.gates = gates
        net.train(was_training)
    return path
