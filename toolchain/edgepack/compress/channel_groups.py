"""Coupled channels of a float-dialect graph, and their physical removal (structured pruning's bookkeeping).

A *channel group* is a set of channels that must be removed together. Channel ``c`` of a group is:

* output channel ``c`` of every conv2d / dense that *produces* the group (several when a residual ``add``
  joins their outputs), and of every depthwise conv (channel multiplier 1) that reads the group: a depthwise
  conv's output channel ``c`` is computed from its input channel ``c`` alone, so it is tied to its producer;
* entry ``c`` of every batchnorm on the group;
* input channel ``c`` of every conv2d that reads the group, and the input features ``c*span .. c*span+span-1``
  of every dense that reads it through a ``flatten`` of an NCHW tensor (``span`` = H*W, PyTorch's C, H, W
  order);
* carried unchanged through relu, clip, max / average / global pooling.

A group is *fixed* (not prunable) when removing its channels would change what the model computes for its
user: it holds the model input or output, feeds a softmax, a sign (binary layer), a reshape that is not a
flatten, a depthwise conv with a channel multiplier above 1, or a flatten over other than axis 1.

:func:`channel_groups` finds the groups; :func:`remove_channels` returns a new graph with some channels of one
group physically removed (smaller weight tensors, not masks); :func:`cost_model` counts MACs and parameters
for any per-group channel counts without rebuilding the graph.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..errors import EdgepackError
from ..graph import Graph, infer_shapes

__all__ = ["ChannelGroup", "channel_groups", "remove_channels", "cost_model", "graph_cost", "gate_points"]

_PASS = ("relu", "clip", "maxpool", "avgpool", "global_avgpool")


@dataclass
class ChannelGroup:
    """One set of coupled channels (see the module docstring). Node names refer to the graph analysed."""

    id: int
    size: int
    producers: list = field(default_factory=list)    # conv2d (group 1) / dense: output channels
    depthwise: list = field(default_factory=list)    # depthwise conv2d (multiplier 1): in and out channels
    batchnorms: list = field(default_factory=list)   # batchnorm nodes
    consumers: list = field(default_factory=list)    # (node name, span): conv2d input channels / dense columns
    gates: list = field(default_factory=list)        # activation tensors where a per-channel gate goes
    fixed: list = field(default_factory=list)        # reasons the group cannot be pruned (empty: prunable)

    @property
    def prunable(self) -> bool:
        return not self.fixed and self.size > 1 and bool(self.producers)


class _UF:
    def __init__(self):
        self.parent = []

    def new(self):
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a):
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
        return a


def gate_points(g: Graph, node_name: str) -> str:
    """Where the gate of a producer's output channels goes: the output of the batchnorm that is the
    producer's only consumer (the paper's 'gate after BN'), else the producer's own output."""
    n = _node(g, node_name)
    out = n.outputs[0]
    users = g.consumers(out)
    if len(users) == 1 and users[0].op == "batchnorm" and out not in g.outputs:
        return users[0].outputs[0]
    return out


def _node(g, name):
    for n in g.nodes:
        if n.name == name:
            return n
    raise KeyError(name)


def channel_groups(g: Graph) -> list[ChannelGroup]:
    """The channel groups of a float-dialect graph (batchnorms kept or folded), in order of first producer."""
    uf = _UF()
    chan: dict[str, tuple[int, int]] = {}   # activation tensor -> (space, span)
    recs: dict[int, dict] = {}

    def rec(s):
        return recs.setdefault(s, {"producers": [], "depthwise": [], "batchnorms": [], "consumers": [],
                                   "fixed": []})

    def new_space(size):
        s = uf.new()
        rec(s)["size"] = size
        return s

    def fix(t, why):
        if t in chan:
            rec(uf.find(chan[t][0]))["fixed"].append(why)

    x = g.inputs[0]
    shp = g.tensors[x].shape
    chan[x] = (new_space(shp[1]), 1)
    fix(x, "model input")
    for n in g.nodes:
        acts = [t for t in n.inputs if not g.tensors[t].is_const]
        ins = [chan.get(t) for t in acts]
        out = n.outputs[0]
        oshape = g.tensors[out].shape
        if any(c is None for c in ins):
            for t in acts:
                fix(t, f"read by '{n.name}' ({n.op}) with no channel axis")
            chan[out] = (new_space(oshape[1] if len(oshape) > 1 else 1), 1)
            fix(out, f"output of '{n.name}'")
            continue
        if n.op == "conv2d":
            w = g.tensors[n.inputs[1]].shape
            grp = n.attrs.get("group", 1)
            s_in, _ = ins[0]
            if grp == 1:
                rec(uf.find(s_in))["consumers"].append((n.name, 1))
                s = new_space(w[0])
                rec(s)["producers"].append(n.name)
                chan[out] = (s, 1)
            elif w[1] == 1 and w[0] == grp:  # depthwise, multiplier 1: tied to its producer
                rec(uf.find(s_in))["depthwise"].append(n.name)
                chan[out] = (s_in, 1)
            else:
                fix(acts[0], f"read by '{n.name}', a grouped / multiplier-{w[0] // max(grp, 1)} depthwise conv")
                s = new_space(w[0])
                rec(s)["producers"].append(n.name)
                chan[out] = (s, 1)
                fix(out, f"output of '{n.name}', a grouped / multiplier depthwise conv")
        elif n.op == "dense":
            s_in, span = ins[0]
            if len(g.tensors[acts[0]].shape) != 2:
                fix(acts[0], f"read by '{n.name}' (dense on a tensor of rank > 2)")
            else:
                rec(uf.find(s_in))["consumers"].append((n.name, span))
            s = new_space(g.tensors[n.inputs[1]].shape[0])
            rec(s)["producers"].append(n.name)
            chan[out] = (s, 1)
        elif n.op == "batchnorm":
            rec(uf.find(ins[0][0]))["batchnorms"].append(n.name)
            chan[out] = ins[0]
        elif n.op in _PASS:
            chan[out] = ins[0]
        elif n.op == "add":
            (a, sa), (b, sb) = ins
            if sa != sb:
                fix(acts[0], f"added by '{n.name}' to a tensor of another layout")
                fix(acts[1], f"added by '{n.name}' to a tensor of another layout")
            root = uf.union(a, b)
            ra, rb = rec(uf.find(a)), recs.get(b if root == a else a)
            if rb is not None and rb is not ra:
                for k in ("producers", "depthwise", "batchnorms", "consumers", "fixed"):
                    ra[k].extend(rb[k])
                ra["size"] = ra.get("size", rb.get("size"))
            chan[out] = (root, sa)
        elif n.op == "flatten":
            s, span = ins[0]
            xs = g.tensors[acts[0]].shape
            if n.attrs.get("axis", 1) % len(xs) != 1:
                fix(acts[0], f"flattened by '{n.name}' over axis {n.attrs.get('axis')}")
                chan[out] = (new_space(oshape[1]), 1)
                fix(out, f"output of '{n.name}'")
            else:
                chan[out] = (s, span * int(np.prod(xs[2:], dtype=np.int64)))
        else:  # softmax, sign, reshape, anything else: the channels mean something to the op
            for t in acts:
                fix(t, f"read by '{n.name}' ({n.op})")
            chan[out] = (new_space(oshape[1] if len(oshape) > 1 else 1), 1)
            fix(out, f"output of '{n.name}' ({n.op})")
    for t in g.outputs:
        fix(t, "model output")
    groups = []
    seen = {}
    for t, (s, _) in chan.items():
        r = uf.find(s)
        if r in seen:
            continue
        d = recs[r]
        if not d["producers"]:
            seen[r] = None
            continue
        first = _node(g, d["producers"][0])
        size = g.tensors[first.inputs[1]].shape[0]
        grp = ChannelGroup(len(groups), size, list(dict.fromkeys(d["producers"])),
                           list(dict.fromkeys(d["depthwise"])), list(dict.fromkeys(d["batchnorms"])),
                           list(dict.fromkeys(d["consumers"])), [], list(dict.fromkeys(d["fixed"])))
        grp.gates = list(dict.fromkeys(gate_points(g, p) for p in grp.producers + grp.depthwise))
        seen[r] = grp
        groups.append(grp)
    order = {n.name: i for i, n in enumerate(g.nodes)}
    groups.sort(key=lambda gr: order[gr.producers[0]])
    for i, gr in enumerate(groups):
        gr.id = i
    return groups


def remove_channels(g: Graph, group: ChannelGroup, drop) -> Graph:
    """A new graph with channels ``drop`` (indices into the group's current channels) of ``group`` removed from
    every member: producer and depthwise weight rows and biases, batchnorm entries, consumer input channels and
    dense columns. Shapes are re-inferred. ``g`` is left unchanged."""
    drop = sorted({int(i) for i in np.asarray(drop).reshape(-1)})
    if not drop:
        return g
    if group.fixed:
        raise EdgepackError(f"channel group {group.id} cannot be pruned: {group.fixed[0]}")
    if drop[0] < 0 or drop[-1] >= group.size:
        raise EdgepackError(f"channel group {group.id}: channel index out of range 0..{group.size - 1}")
    if len(drop) >= group.size:
        raise EdgepackError(f"channel group {group.id}: cannot remove all {group.size} channels")
    keep = np.setdiff1d(np.arange(group.size), drop)
    g = copy.deepcopy(g)
    nodes = {n.name: n for n in g.nodes}

    def take(tensor, idx, axis):
        t = g.tensors[tensor]
        t.data = np.ascontiguousarray(np.take(t.data, idx, axis=axis))
        t.shape = tuple(t.data.shape)

    for name in group.producers + group.depthwise:
        n = nodes[name]
        for t in n.inputs[1:]:
            take(t, keep, 0)
        if name in group.depthwise:
            n.attrs["group"] = len(keep)
    for name in group.batchnorms:
        for t in nodes[name].inputs[1:5]:
            take(t, keep, 0)
    for name, span in group.consumers:
        n = nodes[name]
        if n.op == "conv2d":
            take(n.inputs[1], keep, 1)
        else:
            cols = (keep[:, None] * span + np.arange(span)[None, :]).reshape(-1)
            take(n.inputs[1], cols, 1)
    for t in g.tensors.values():
        if t.data is None and t.name not in g.inputs:
            t.shape = None
    return infer_shapes(g)


def _node_costs(g: Graph, groups):
    """Per conv2d / dense: (coefficient, out group id or None, out count, in group id or None, in count, taps,
    span). With out / in the channel counts (from the group where there is one; ``in`` = group channels x span
    for a dense after a flatten; 1 for a depthwise conv): MACs = coefficient * out * in, parameters =
    out * in * taps + out (one bias per output channel: a batchnorm folds into it)."""
    of_out, of_in = {}, {}
    for gr in groups:
        for p in gr.producers:
            of_out[p] = gr.id
        for d in gr.depthwise:
            of_out[d] = gr.id
        for c, span in gr.consumers:
            of_in[c] = (gr.id, span)
    costs = []
    for n in g.nodes:
        if n.op not in ("conv2d", "dense"):
            continue
        w = g.tensors[n.inputs[1]].shape
        if n.op == "conv2d":
            y = g.tensors[n.outputs[0]].shape
            spatial = int(np.prod(y[2:], dtype=np.int64))
            k = int(np.prod(w[2:], dtype=np.int64))
            if n.name in of_out and _node(g, n.name).attrs.get("group", 1) != 1:  # depthwise
                costs.append((spatial * k, of_out[n.name], w[0], None, 1, k, 1))
                continue
            gi, span = of_in.get(n.name, (None, 1))
            costs.append((spatial * k, of_out.get(n.name), w[0], gi, w[1], k, span))
        else:
            gi, span = of_in.get(n.name, (None, 1))
            costs.append((1, of_out.get(n.name), w[0], gi, w[1], 1, span))
    return costs


def cost_model(g: Graph, groups):
    """A function ``counts -> (macs, params)`` for per-group channel counts (a dict group id -> channels; groups
    left out keep their current size), for the graph's layers at batch 1."""
    costs = _node_costs(g, groups)
    sizes = {gr.id: gr.size for gr in groups}

    def count(counts=None):
        c = dict(sizes)
        c.update(counts or {})
        macs = params = 0
        for coef, go, o, gi, i, k, span in costs:
            o_ = c[go] if go is not None else o
            i_ = c[gi] * span if gi is not None else i
            macs += coef * o_ * i_
            params += o_ * i_ * k + o_
        return macs, params
    return count


def graph_cost(g: Graph):
    """(MACs, parameters) of a float-dialect graph at batch 1: MACs of conv2d and dense layers; parameters =
    their weights plus one bias per output channel (what is left after batchnorm folding)."""
    macs = params = 0
    for n in g.nodes:
        if n.op not in ("conv2d", "dense"):
            continue
        w = g.tensors[n.inputs[1]].shape
        if n.op == "conv2d":
            macs += int(np.prod(g.tensors[n.outputs[0]].shape[1:], dtype=np.int64)) * int(np.prod(w[1:]))
        else:
            macs += int(w[0]) * int(w[1])
        params += int(np.prod(w, dtype=np.int64)) + int(w[0])
    return macs, params
