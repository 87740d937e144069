"""Model importers: ONNX, torch.export (.pt2), TorchScript and pickled nn.Module (.pt) -> float-dialect Graph.

Each format-specific importer builds a raw graph that may still hold the pseudo op ``identity``, ``pad`` nodes
and ``add`` of a constant. :func:`finish_graph` (shared) removes identities, merges zero pads of H / W into the
following conv / avgpool (other pads stay ``pad`` ops), turns constant adds after a conv/dense into its bias
(others stay adds of a constant), infers shapes, folds batchnorms (the others become 1x1 depthwise convs),
removes no-op reshapes and slices, folds the transposes that only change how memory is read (:mod:`.layout`)
and checks the one-input/one-output contract. Rank-3 tensors arrive as 4-D (N, C, 1, L)
(:func:`.layout.lift_shape`), their model layout in ``meta["io"]``.

Batch convention: the graph's input has batch dimension 1; it is a nominal shape. Reshape targets keep the batch
at dimension 0, so a float executor may run any batch N.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import EdgepackError
from ..graph import Graph, fold_batchnorm, infer_shapes
from .layout import fold_transposes

__all__ = ["load_model", "finish_graph", "ops_text"]


def ops_text() -> str:
    """What ``edgepack ops`` prints: the operator tables the importers dispatch through."""
    from .onnx_frontend import ONNX_OPS
    from .optable import ops_text as text
    from .torch_frontend import TORCH_OPS

    return text([ONNX_OPS, TORCH_OPS])


def load_model(path, input_shape=None, fold_bn: bool = True, trust_pickle: bool = False) -> Graph:
    """Import a model file (.onnx, .pt2, .pt) into a float-dialect graph with batch 1.

    ``input_shape`` (a tuple, NCHW, (N, C, L) or (N, F)) is needed only where the file carries no shapes (TorchScript,
    pickled nn.Module); where given for other formats it fills in dynamic dimensions. ``fold_bn=False`` keeps
    batchnorm nodes (for training-time tools such as pruning, which fine-tune the batchnorm parameters).
    ``trust_pickle`` allows a pickled nn.Module ``.pt`` (unpickling runs code from the file); nothing else
    ever unpickles objects from a model file.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgepackError(f"{path}: no such file")
    if input_shape is not None:
        try:
            input_shape = tuple(int(v) for v in input_shape)
        except (TypeError, ValueError):
            raise EdgepackError(f"{path}: input shape {input_shape!r} is not a tuple of integers") from None
        if len(input_shape) not in (2, 3, 4) or min(input_shape) <= 0:
            raise EdgepackError(f"{path}: input shape {input_shape} must be 4-D NCHW, 3-D (N, C, L) or 2-D (N, F) "
                                "with positive sizes")
        input_shape = (1,) + input_shape[1:]
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_frontend import load_onnx
        g, fmt = load_onnx(path, input_shape, fold_bn), "onnx"
    elif suffix == ".pt2":
        from .torch_frontend import load_pt2
        g, fmt = load_pt2(path, input_shape, fold_bn), "pt2"
    elif suffix in (".pt", ".pth"):
        from .torch_frontend import load_pt
        g, fmt = load_pt(path, input_shape, fold_bn, trust_pickle=trust_pickle)
    else:
        raise EdgepackError(f"{path}: unknown model format '{suffix}'; expected .onnx, .pt2 (torch.export.save) "
                            "or .pt (TorchScript or pickled nn.Module)")
    g.meta["source"] = {"path": str(path), "format": fmt,
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return g


# ---- shared clean-up -------------------------------------------------------------------------------------
def finish_graph(g: Graph, source: str, fold_bn: bool = True) -> Graph:
    """Turn a raw frontend graph into a clean float-dialect graph (see the module docstring); batchnorms are
    folded into the conv/dense before them unless ``fold_bn`` is False."""
    if len(g.inputs) != 1:
        raise EdgepackError(f"{source}: the model has {len(g.inputs)} inputs; edgepack supports exactly one")
    if len(g.outputs) != 1:
        raise EdgepackError(f"{source}: the model has {len(g.outputs)} outputs; edgepack supports exactly one")
    shape = g.tensors[g.inputs[0]].shape
    if shape is None or len(shape) not in (2, 4) or shape[0] != 1:
        raise EdgepackError(f"{source}: input shape {shape} is not NCHW or (N, F) with batch 1")
    if g.outputs[0] in g.inputs:
        raise EdgepackError(f"{source}: the model output is its input; nothing to compile")
    _check_finite(g, source)
    _remove_identities(g)
    _remove_dead(g)
    _merge_pads(g, source)
    _relu_from_clip(g)
    _fold_const_adds(g, source)
    for n in g.nodes:
        if n.op in ("conv2d", "conv_transpose2d") and n.attrs.get("group", 1) != 1:
            w = g.tensors[n.inputs[1]].shape  # conv2d (O, I/g, ..), conv_transpose2d (I, O/g, ..)
            if w[0] % n.attrs["group"]:
                raise EdgepackError(f"{source}: node '{n.name}' ({n.op}): {w[0]} "
                                    f"{'output' if n.op == 'conv2d' else 'input'} channels do not split into "
                                    f"group={n.attrs['group']} groups")
    infer_shapes(g, source=source)
    if fold_bn:
        fold_batchnorm(g, source=source)
        _check_finite(g, source, "after folding its batchnorm (a negative or NaN running variance?)")
    _sign_thresholds(g)
    if _simplify_reshapes(g) | _drop_whole_slices(g) | fold_transposes(g):
        infer_shapes(g, source=source)
        _simplify_reshapes(g)
    if not g.nodes:
        raise EdgepackError(f"{source}: the model has no operators left to compile")
    g.prune_unused()
    return g


def _check_finite(g: Graph, source: str, when: str = ""):
    """Every constant must be finite: NaN or Inf weights cannot be quantized (one line naming the layer)."""
    for name, t in g.tensors.items():
        if t.data is None or t.data.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(t.data)
        if bad.any():
            users = [n.name for n in g.nodes if name in n.inputs]
            where = f"layer '{users[0]}'" if users else f"constant '{name}'"
            what = "NaN" if np.isnan(t.data[bad]).any() else "Inf"
            raise EdgepackError(f"{source}: {where} has {int(bad.sum())} non-finite value(s) ({what}) in {name}"
                                f"{' ' + when if when else ''}; retrain or fix the weights before building")


def _remove_identities(g: Graph):
    keep = []
    for n in g.nodes:
        if n.op == "identity":
            g.replace_uses(n.outputs[0], n.inputs[0])
        else:
            keep.append(n)
    g.nodes = keep


def _remove_dead(g: Graph):
    """Drop nodes none of whose outputs is read (e.g. the unused one of an RNN's sequence / last-step pair)."""
    changed = True
    while changed:
        used = set(g.outputs) | {t for n in g.nodes for t in n.inputs}
        keep = [n for n in g.nodes if any(t in used for t in n.outputs)]
        changed = len(keep) != len(g.nodes)
        g.nodes = keep


def _merge_pads(g: Graph, source: str):
    """Merge each zero pad of H / W into every consumer when all of them are a conv2d, or an avgpool that counts
    pads (or has none); any other pad stays a ``pad`` op."""
    keep = []
    for n in g.nodes:
        if n.op != "pad":
            keep.append(n)
            continue
        n.attrs.setdefault("channel_pads", (0, 0))
        n.attrs.setdefault("value", 0.0)
        t, l, b, r = n.attrs["pads"]
        users = g.consumers(n.outputs[0])

        def mergeable(u):
            return u.inputs[0] == n.outputs[0] and (u.op == "conv2d" or (u.op == "avgpool" and (
                u.attrs.get("count_include_pad", True) or not any(u.attrs.get("pads", (0, 0, 0, 0))))))
        if n.attrs["value"] != 0.0 or any(n.attrs["channel_pads"]) or n.outputs[0] in g.outputs or not users \
                or not all(mergeable(u) for u in users):
            keep.append(n)
            continue
        for u in users:
            pt, pl, pb, pr = u.attrs.get("pads", (0, 0, 0, 0))
            u.attrs["pads"] = (pt + t, pl + l, pb + b, pr + r)
            if u.op == "avgpool":
                u.attrs["count_include_pad"] = True
            u.inputs[0] = n.inputs[0]
    g.nodes = keep


def _relu_from_clip(g: Graph):
    for n in g.nodes:
        if n.op == "clip" and n.attrs.get("max") is None and n.attrs.get("min") == 0:
            n.op, n.attrs = "relu", {}


def _fold_const_adds(g: Graph, source: str):
    """An ``add`` of a constant right after a conv2d/dense (its only user) becomes (part of) its bias; one whose
    every consumer is a sign becomes their threshold: sign(x + c) = sign(x - t) with t = -c (a learned
    binary-layer threshold, ReActNet's RSign, exported by binarize_recu.export_ready); other adds of a constant
    stay element-wise adds."""
    keep = []
    for n in g.nodes:
        if n.op != "add" or not any(g.tensors[t].is_const for t in n.inputs):
            keep.append(n)
            continue
        consts = [t for t in n.inputs if g.tensors[t].is_const]
        acts = [t for t in n.inputs if not g.tensors[t].is_const]
        signs = g.consumers(n.outputs[0]) if len(acts) == 1 else []
        if signs and all(u.op == "sign" and len(u.inputs) == 1 for u in signs) and n.outputs[0] not in g.outputs:
            t = g.add_const(g.fresh(n.name + "_threshold"), -np.asarray(g.const(consts[0]), dtype=np.float32))
            for u in signs:  # sign(x + c) = sign(x - t), t = -c: the sign's threshold (checked per channel later)
                u.inputs = [acts[0], t]
            continue
        prod = g.producer(acts[0]) if len(acts) == 1 else None
        ok = prod is not None and prod.op in ("conv2d", "dense") and len(g.consumers(acts[0])) == 1 \
            and acts[0] not in g.outputs
        if ok:
            w = g.const(prod.inputs[1])
            c = np.asarray(g.const(consts[0]), dtype=np.float64)
            o = w.shape[0]
            allowed = [(o,), (1, o)] if prod.op == "dense" else [(o, 1, 1), (1, o, 1, 1)]
            if c.size == 1 or c.shape in allowed:
                c = np.broadcast_to(c.reshape(-1), (o,))
                b = g.const(prod.inputs[2]).astype(np.float64) if len(prod.inputs) > 2 else np.zeros(o)
                bn = g.add_const(g.fresh(prod.name + "_bias"), (b + c).astype(np.float32))
                prod.inputs = [prod.inputs[0], prod.inputs[1], bn]
                g.replace_uses(n.outputs[0], acts[0])
                continue
        keep.append(n)
    g.nodes = keep
    g.prune_unused()


def _sign_thresholds(g: Graph):
    """Sign thresholds become one value per channel, (C,), and a relu / clip whose every reader is a sign with
    thresholds strictly inside its range goes: for lo < t <= hi, sign(clip(y, lo, hi) - t) = sign(y - t) (y >= t
    exactly where clip(y) >= t), so a binary layer with BN + ReLU + threshold in front folds into one integer
    threshold per channel. A threshold at or below lo (the sign is constant +1) keeps the relu / clip."""
    for n in g.nodes:
        if n.op == "sign" and len(n.inputs) > 1:
            c = g.tensors[n.inputs[0]].shape[1]
            t = np.asarray(g.const(n.inputs[1]), np.float32)
            t = np.broadcast_to(t.reshape(-1) if t.size == c else t.reshape(-1)[:1], (c,))
            n.inputs[1] = g.add_const(g.fresh(n.inputs[1] + "_c"), np.ascontiguousarray(t))
    for n in list(g.nodes):
        if n.op not in ("relu", "clip") or n.outputs[0] in g.outputs:
            continue
        lo, hi = (0.0, None) if n.op == "relu" else (n.attrs.get("min"), n.attrs.get("max"))
        users = g.consumers(n.outputs[0])
        if not users or not all(u.op == "sign" and len(u.inputs) > 1 for u in users):
            continue
        ts = [g.const(u.inputs[1]) for u in users]
        if all((lo is None or (t > lo).all()) and (hi is None or (t <= hi).all()) for t in ts):
            g.nodes.remove(n)
            for u in users:
                u.inputs[0] = n.inputs[0]
    g.prune_unused()


def _drop_whole_slices(g: Graph) -> bool:
    """Remove slices that keep the whole axis (e.g. GhostNet's ``out[:, :oup]`` when the concat has oup channels)."""
    keep, changed = [], False
    for n in g.nodes:
        if n.op == "slice" and n.outputs[0] not in g.outputs and \
                tuple(g.tensors[n.inputs[0]].shape) == tuple(g.tensors[n.outputs[0]].shape):
            g.replace_uses(n.outputs[0], n.inputs[0])
            changed = True
            continue
        keep.append(n)
    g.nodes = keep
    return changed


def _simplify_reshapes(g: Graph) -> bool:
    """Drop reshapes/flattens that do not change the shape; turn (N, ...) -> (N, prod) reshapes into flatten."""
    changed = False
    keep = []
    for n in g.nodes:
        if n.op in ("reshape", "flatten"):
            xs = g.tensors[n.inputs[0]].shape
            ys = g.tensors[n.outputs[0]].shape
            if tuple(xs) == tuple(ys):
                out = n.outputs[0]
                if out in g.outputs and n.inputs[0] in g.inputs:
                    keep.append(n)  # the only node: keep it so the graph is not empty
                    continue
                g.replace_uses(out, n.inputs[0])
                changed = True
                continue
            if n.op == "reshape" and len(ys) == 2 and len(xs) > 2 and ys[0] == xs[0]:
                n.op, n.attrs = "flatten", {"axis": 1}
                changed = True
        keep.append(n)
    g.nodes = keep
    return changed


def short_reason(e: BaseException, limit: int = 200) -> str:
    """One line of an exception's message, cut to ``limit`` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
