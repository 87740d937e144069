"""Run an integer-dialect graph with the numpy reference ops (the specification)."""

from __future__ import annotations

import numpy as np

from ..graph import Graph
from .ops import OPS


def run_int(g: Graph, xq: np.ndarray, keep_all: bool = False):
    """xq: int8 batch in the graph's input layout (N, H, W, C) or (N, F). Returns the output batch (int8),
    or a dict of every activation when keep_all."""
    vals = {g.inputs[0]: np.asarray(xq, np.int8)}
    for n in g.nodes:
        args = [vals[t] if g.tensors[t].data is None else g.tensors[t].data for t in n.inputs]
        vals[n.outputs[0]] = OPS[n.op](*args, **n.attrs)
    return vals if keep_all else vals[g.outputs[0]]
