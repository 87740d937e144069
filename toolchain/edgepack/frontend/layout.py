"""Layouts shared by the importers: rank-3 tensors carried as 4-D, and transposes folded out of the graph.

Rank 3 (N, C, L) -> (N, C, 1, L): Conv1d, MaxPool1d, AvgPool1d, BatchNorm1d, Upsample on sequences become the
2-D ops with H = 1 (:func:`lift_shape`, :func:`lift_perm`, :func:`lift_axis`). The element order does not
change, so the model's own (N, C, L) is one reshape from the graph's tensor; the importers record it in
``meta["io"]`` (:func:`set_io`).

:func:`fold_transposes` removes the transposes that only change how memory is read (issue 14):

* an input permute (a model that takes NHWC and permutes it to NCHW first): the graph's input becomes the
  permuted tensor and ``meta["io"]["input"]["perm"]`` remembers the permutation, so ``run`` / ``--input``
  still take the model's own layout. On edgepack's NHWC memory an NHWC -> NCHW input permute is then the
  identity: the caller's NHWC buffer is the integer graph's input as it is.
* an output permute: likewise into ``meta["io"]["output"]``;
* a transpose whose only reader is a flatten feeding dense layers: the dense weights' columns are reordered
  instead (w'[:, t[k]] = w[:, k], t the flat index of the transposed element k in the untransposed tensor);
* reshape (N, C, ...) -> (N, g, C/g, ...), swap of axes 1 and 2, reshape back: ``channel_shuffle(g)``, one
  gather on the device (the quantizer's transpose of the NHWC channel axis as (g, C/g) -> (C/g, g)).

Every other transpose stays in the graph; the quantizer lowers it to one ``transpose_s8`` kernel (or to no
kernel when it does not change the order of the NHWC memory).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..graph import Graph


def lift_shape(shape):
    """(N, C, L) -> (N, C, 1, L); other ranks unchanged."""
    shape = tuple(shape)
    return shape[:2] + (1,) + shape[2:] if len(shape) == 3 else shape


def lift_axis(axis: int, rank: int) -> int:
    """Axis of a rank-``rank`` framework tensor -> axis of its graph tensor."""
    axis %= rank
    return axis + 1 if rank == 3 and axis == 2 else axis


def lift_perm(perm):
    """A permutation of a rank-3 tensor's axes -> the same permutation of its (N, C, 1, L) form."""
    perm = [int(p) % len(perm) for p in perm]
    if len(perm) != 3:
        return tuple(perm)
    m = {0: 0, 1: 1, 2: 3}
    return (m[perm[0]], m[perm[1]], 2, m[perm[2]])


def set_io(g: Graph, which: str, model_shape, perm=None, view=None):
    """Record the model's own layout of its ``which`` tensor where it differs from the graph's
    (``graph.io_spec``: graph = model.reshape(view).transpose(perm).reshape(graph shape))."""
    model_shape = tuple(int(v) for v in model_shape)
    view = model_shape if view is None else tuple(int(v) for v in view)
    perm = tuple(range(len(view))) if perm is None else tuple(int(p) for p in perm)
    gshape = g.tensors[g.inputs[0] if which == "input" else g.outputs[0]].shape or lift_shape(model_shape)
    if perm == tuple(range(len(view))) and model_shape == tuple(gshape):
        (g.meta.get("io") or {}).pop(which, None)
        return
    d = {"shape": list(model_shape), "perm": list(perm)}
    if view != model_shape:
        d["view"] = list(view)
    g.meta.setdefault("io", {})[which] = d


def _find_view(model_shape, batch_axis, views, target: np.ndarray):
    """(view, perm) with arange(model).reshape(view).transpose(perm).ravel() == target.ravel(), the batch axis
    first (a view other than the model's own shape only for a model whose batch is its axis 0), or None."""
    m = np.arange(int(np.prod(model_shape)))
    for view in views:
        b = batch_axis if tuple(view) == tuple(model_shape) else 0
        if b != batch_axis and batch_axis != 0:
            continue
        mv = m.reshape(view)
        for q in itertools.permutations([a for a in range(len(view)) if a != b]):
            if np.array_equal(mv.transpose((b,) + q).ravel(), target.ravel()):
                return tuple(view), (b,) + q
    return None


def _model_indices(g, which, shape):
    """The model's element index of every element of the graph's ``which`` tensor, and the model's
    (shape, batch axis)."""
    d = (g.meta.get("io") or {}).get(which)
    mshape = tuple(d["shape"]) if d else tuple(shape)
    view = tuple(d.get("view") or d["shape"]) if d else mshape
    perm = tuple(d["perm"]) if d else tuple(range(len(mshape)))
    idx = np.arange(int(np.prod(mshape))).reshape(view).transpose(perm).reshape(shape)
    b = perm[0] if view == mshape else 0
    return idx, mshape, b


def _boundary_transposes(g: Graph) -> bool:
    """input -> [reshape] -> transpose: the graph starts at the transposed tensor; transpose -> [flatten] ->
    output: the graph ends at the untransposed one; ``meta["io"]`` says how the model's tensors map."""
    changed = False
    inp = g.inputs[0]
    chain, t = [], _sole_consumer(g, inp)
    if t is not None and t.op in ("reshape", "flatten"):
        chain.append(t)
        t = _sole_consumer(g, t.outputs[0])
    if t is not None and t.op == "transpose" and t.outputs[0] not in g.outputs:
        idx, mshape, b = _model_indices(g, "input", g.tensors[inp].shape)
        views = [mshape]
        if chain:
            idx = idx.reshape(g.tensors[chain[0].outputs[0]].shape)
            views.append(g.tensors[chain[0].outputs[0]].shape)
        found = _find_view(mshape, b, views, idx.transpose(t.attrs["perm"]))
        if found is not None:
            for n in chain + [t]:
                g.nodes.remove(n)
            g.inputs = [t.outputs[0]]
            set_io(g, "input", mshape, found[1], found[0])
            changed = True
    out = g.outputs[0]
    chain, t = [], g.producer(out)
    if t is not None and t.op in ("reshape", "flatten") and len(g.consumers(t.inputs[0])) == 1:
        chain.append(t)
        t = g.producer(t.inputs[0])
    if t is not None and t.op == "transpose" and t.inputs[0] not in g.inputs and (
            not chain or len(g.consumers(t.outputs[0])) == 1):
        idx, mshape, b = _model_indices(g, "output", g.tensors[out].shape)
        tshape = g.tensors[t.outputs[0]].shape
        views = [mshape] + ([tshape] if chain else [])
        found = _find_view(mshape, b, views, idx.reshape(tshape).transpose(np.argsort(t.attrs["perm"])))
        if found is not None:
            for n in chain + [t]:
                g.nodes.remove(n)
            g.outputs = [t.inputs[0]]
            set_io(g, "output", mshape, found[1], found[0])
            changed = True
    return changed


def fold_transposes(g: Graph) -> bool:
    """Fold input / output permutes, transpose -> flatten -> dense and channel shuffles (module docstring).
    Shapes must be inferred. Returns whether the graph changed."""
    changed = _channel_shuffles(g)
    changed |= _boundary_transposes(g)
    changed |= _transpose_flatten_dense(g)
    keep = []
    for n in g.nodes:  # a transpose that keeps every axis in place
        if n.op == "transpose" and tuple(n.attrs["perm"]) == tuple(range(len(n.attrs["perm"]))) \
                and n.outputs[0] not in g.outputs:
            g.replace_uses(n.outputs[0], n.inputs[0])
            changed = True
            continue
        keep.append(n)
    g.nodes = keep
    g.prune_unused()
    return changed


def _sole_consumer(g, t):
    users = g.consumers(t)
    return users[0] if len(users) == 1 and t not in g.outputs else None


def _transpose_flatten_dense(g: Graph) -> bool:
    changed = False
    for t in list(g.nodes):
        if t.op != "transpose":
            continue
        f = _sole_consumer(g, t.outputs[0])
        if f is None or f.op not in ("flatten", "reshape") or len(g.tensors[f.outputs[0]].shape) != 2:
            continue
        dense = g.consumers(f.outputs[0])
        if not dense or f.outputs[0] in g.outputs or any(d.op != "dense" or d.inputs[0] != f.outputs[0]
                                                         for d in dense):
            continue
        xs = g.tensors[t.inputs[0]].shape
        perm = t.attrs["perm"]
        flat = np.arange(int(np.prod(xs[1:]))).reshape(xs[1:]).transpose([p - 1 for p in perm[1:]]).ravel()
        for d in dense:
            w = g.const(d.inputs[1])
            w2 = np.empty_like(w)
            w2[:, flat] = w
            d.inputs[1] = g.add_const(g.fresh(d.inputs[1] + "_unpermuted"), w2)
        f.inputs[0] = t.inputs[0]
        if f.op == "reshape":
            f.op, f.attrs = "flatten", {"axis": 1}
        g.nodes.remove(t)
        changed = True
    return changed


def _channel_shuffles(g: Graph) -> bool:
    changed = False
    for r1 in list(g.nodes):
        if r1.op != "reshape" or r1 not in g.nodes:
            continue
        xs, s1 = g.tensors[r1.inputs[0]].shape, g.tensors[r1.outputs[0]].shape
        t = _sole_consumer(g, r1.outputs[0])
        if t is None or t.op != "transpose" or len(s1) < 3 or len(xs) != 4:
            continue
        r2 = _sole_consumer(g, t.outputs[0])
        if r2 is None or r2.op not in ("reshape", "flatten") or tuple(g.tensors[r2.outputs[0]].shape) != tuple(xs):
            continue
        ok = (tuple(t.attrs["perm"]) == (0, 2, 1) + tuple(range(3, len(s1))) and s1[0] == xs[0]
              and s1[1] * s1[2] == xs[1] and int(np.prod(s1[3:])) == xs[2] * xs[3])
        if not ok:
            continue
        for n in (r1, t):
            g.nodes.remove(n)
        r2.op, r2.inputs, r2.attrs = "channel_shuffle", [r1.inputs[0]], {"groups": int(s1[1])}
        changed = True
    return changed
