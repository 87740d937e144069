"""Static arena plan from tensor lifetimes, with tensors that are views of others.

Every activation that is neither the model input (read from the caller's buffer) nor the model output
(written to the caller's buffer) lives in one static arena. A tensor may be a *view* into another tensor's
storage instead of a buffer of its own:

* a ``reshape`` output shares its input's storage (so do the transposes and reshapes the quantizer proved not
  to move NHWC memory: it emits them as ``reshape``; a ``transpose_s8`` that does move it is an ordinary kernel
  with its own output buffer);
* an input of ``concat_s8`` is written by its producer straight into its slice of the concat's output, where
  the requantization is the identity (same scale and zero point) and the layout allows it: a slice along H of an
  NHWC tensor (or along the features of an (N, F) one) is one contiguous block, so any producer can write it; a
  slice along W or C is strided (row stride W_out*C_out, pixel stride C_out elements), so only kernels that take
  strided views (:data:`STRIDED_OPS`) may write it, and every other reader of that input must take strided views
  too. A concat whose inputs are all views runs no code; otherwise its kernel copies (and requantizes) the
  others, and the plan says why for each (``notes``);
* a ``slice_s8`` output is a view of its input when it needs no requantization and its readers can take it
  (a contiguous block, or strided readers); otherwise it is copied.

A view is (root tensor, element offset, row stride, pixel stride): element (y, x, c) of an NHWC view lives at
``root[offset + y * row_stride + x * pixel_stride + c]``; (N, F) tensors are (N, 1, 1, F). The storage of a root
lives from the first op that writes or reads any of its views to the last. A kernel's inputs and output never
overlap except as disjoint slices of one root (no in-place ops), so the *liveness bound* -- the largest sum of
aligned root sizes live at any one op -- is a lower bound on any arena for this op order and these views; an
aliased tensor is not counted apart from its root. ``bound_without_views`` is the same bound when every concat
and slice copies (what the views save).

The planner tries several placement orders (TFLite Micro's greedy-by-size, by first use, by size x lifetime)
with first-fit offsets, and a two-ended (ping-pong) placement capped at the bound, and keeps the smallest arena;
the report gives arena / bound.

A kernel may need scratch memory for its own duration (the int16 im2col columns of the SMLAD schedules):
``scratch`` maps a node's name to its bytes, planned as a buffer live at that node only. The bound without
scratch (``tensor_bound_bytes``) plus the largest scratch bounds the bound with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ALIGN = 4

# integer ops whose kernels read and write strided NHWC views (their templates take attrs["layout"])
STRIDED_OPS = frozenset({"conv2d_s8", "dwconv2d_s8", "concat_s8", "slice_s8"})


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Buffer:
    name: str
    size: int
    first: int
    last: int
    tensors: list = field(default_factory=list)
    offset: int = -1


@dataclass
class Plan:
    arena_bytes: int
    bound_bytes: int
    total_bytes: int
    buffers: dict  # buffer name -> Buffer
    storage: dict  # tensor name -> ("input" | "output" | "arena", byte offset)
    order: str = ""
    layouts: dict = field(default_factory=dict)  # tensor -> (row stride, pixel stride) of a strided view
    elided: set = field(default_factory=set)  # nodes that run no code (reshape, views, concat of views only)
    notes: dict = field(default_factory=dict)  # node name -> what the plan did with its tensors, and why
    in_place: dict = field(default_factory=dict)  # concat node name -> [input written in place by its producer]
    bound_without_views: int = 0
    scratch: dict = field(default_factory=dict)  # node name -> arena offset of its scratch buffer
    tensor_bound_bytes: int = 0  # liveness bound of the activations alone
    scratch_bytes: int = 0  # the largest scratch buffer


def _hwc(shape):
    s = tuple(shape)
    if len(s) == 4:
        return s[1], s[2], s[3]
    return 1, 1, int(np.prod(s[1:], dtype=np.int64))


def _first_fit(bufs, order_key):
    placed = []
    for b in sorted(bufs, key=order_key):
        conflicts = sorted((p for p in placed if not (p.last < b.first or b.last < p.first)),
                           key=lambda p: p.offset)
        off = 0
        for p in conflicts:
            if off + b.size <= p.offset:
                break
            off = max(off, p.offset + _align(p.size))
        b.offset = off
        placed.append(b)
    return max((b.offset + _align(b.size) for b in bufs), default=0)


def _two_ended(bufs, cap):
    """In order of first use, place each buffer at the end (bottom or top of a ``cap``-byte arena) opposite
    to the buffer it overlaps most recently placed -- ping-pong, which is optimal for chains -- falling back
    to the other end, then to first fit above the cap."""
    placed = []
    for b in sorted(bufs, key=lambda b: (b.first, -b.size)):
        conf = [p for p in placed if not (p.last < b.first or b.last < p.first)]
        size = _align(b.size)

        def free(off):
            return off >= 0 and all(off + size <= p.offset or p.offset + _align(p.size) <= off for p in conf)

        lows = sorted({0} | {p.offset + _align(p.size) for p in conf})
        highs = sorted({cap - size} | {p.offset - size for p in conf}, reverse=True)
        low = next((o for o in lows if o + size <= cap and free(o)), None)
        high = next((o for o in highs if o + size <= cap and free(o)), None)
        prefer_top = bool(conf) and (conf[-1].offset + _align(conf[-1].size) * 0.5) < cap / 2
        first, second = (high, low) if prefer_top else (low, high)
        off = first if first is not None else second
        if off is None:
            off = next(o for o in lows if free(o))
        b.offset = off
        placed.append(b)
    return max((b.offset + _align(b.size) for b in bufs), default=0)


class _Views:
    """Parent links: tensor -> (parent, element offset in the parent's coordinates as (dy, dx, dc) or None for
    a reshape, which keeps the offset and takes dense strides of its own shape)."""

    def __init__(self, g):
        self.g = g
        self.parent: dict = {}
        self.children: dict = {}

    def link(self, t, parent, delta):
        self.parent[t] = (parent, delta)
        self.children.setdefault(parent, []).append(t)

    def root(self, t):
        while t in self.parent:
            t = self.parent[t][0]
        return t

    def resolve(self, t):
        """(root, element offset, row stride, pixel stride) of t."""
        if t not in self.parent:
            h, w, c = _hwc(self.g.tensors[t].shape)
            return t, 0, w * c, c
        p, delta = self.parent[t]
        root, off, rs, ps = self.resolve(p)
        if delta is None:  # reshape of a dense parent
            h, w, c = _hwc(self.g.tensors[t].shape)
            return root, off, w * c, c
        dy, dx, dc = delta
        return root, off + dy * rs + dx * ps + dc, rs, ps

    def dense(self, t):
        _, _, rs, ps = self.resolve(t)
        h, w, c = _hwc(self.g.tensors[t].shape)
        return (w == 1 or ps == c) and (h == 1 or rs == w * c)

    def descendants(self, t):
        out = []
        for ch in self.children.get(t, []):
            out.append(ch)
            out.extend(self.descendants(ch))
        return out


def _delta(shape_nhwc, axis, offset):
    """(dy, dx, dc) of a sub-block starting ``offset`` elements along NHWC ``axis`` (1, 2, 3; 2-D: axis 1 = F)."""
    if len(shape_nhwc) != 4:
        return (0, 0, offset)
    return {1: (offset, 0, 0), 2: (0, offset, 0), 3: (0, 0, offset)}[axis]


def _same_quant(a, b):
    qa, qb = a.quant, b.quant
    return qa is not None and qb is not None and float(np.asarray(qa.scale)) == float(np.asarray(qb.scale)) \
        and int(qa.zero_point) == int(qb.zero_point)


SCRATCH = "scratch:"  # buffer-name prefix of a node's scratch


def storage_root(g):
    """tensor -> the tensor whose storage it uses through ``reshape`` outputs (which share their input's); the
    views of concat inputs and slices are the plan's (:func:`plan`)."""
    root = {}

    def find(t):
        while t in root:
            t = root[t]
        return t

    for n in g.nodes:
        if n.op == "reshape":
            root[n.outputs[0]] = find(n.inputs[0])
    return find


def plan(g, views: bool = True, scratch: dict | None = None) -> Plan:
    """Plan the arena of an integer-dialect graph (nodes in execution order). ``views=False`` copies every
    concat input and slice (the comparison the report gives); ``scratch``: node name -> bytes."""
    scratch = scratch or {}
    v = _Views(g)
    for n in g.nodes:
        if n.op == "reshape":
            v.link(n.outputs[0], n.inputs[0], None)
    if v.root(g.inputs[0]) in {v.root(t) for t in g.outputs}:
        raise ValueError("the model output is its input; nothing to compute")
    producer = {t: n for n in g.nodes for t in n.outputs}
    consumers: dict = {}
    for n in g.nodes:
        for t in n.inputs:
            consumers.setdefault(t, []).append(n)
    outputs = set(g.outputs)
    notes, in_place, elided = {}, {}, {n.name for n in g.nodes if n.op == "reshape"}

    def reaches_output(t):
        return t in outputs or any(d in outputs for d in v.descendants(t))

    def strided_ok(t, but):
        """None if ``t`` and its views can be strided views (their writers and every reader but the concat
        ``but`` take strided views), else why not."""
        p = producer.get(t)
        if p is not None and p.op not in STRIDED_OPS:
            return f"its producer '{p.name}' ({p.op}) cannot write a strided view"
        for c in consumers.get(t, []):
            if c is not but and c.op not in STRIDED_OPS:
                return f"'{t}' is also read by '{c.name}' ({c.op}), which cannot read a strided view"
        for d in v.children.get(t, []):
            if v.parent[d][1] is None:
                return f"'{t}' is reshaped ('{d}'), which needs it dense"
            why = strided_ok(d, None)
            if why:
                return why
        return None

    def try_view(t, parent, delta, but):
        """Make t a view of parent at delta; None if it stands (dense, or strided with writers and readers that
        take strided views), else undo it and say why."""
        v.link(t, parent, delta)
        why = None if v.dense(t) else strided_ok(t, but)
        if why is not None:
            del v.parent[t]
            v.children[parent].remove(t)
        return why

    if views:
        # concat inputs written in place by their producers
        for n in g.nodes:
            if n.op != "concat_s8":
                continue
            y = n.outputs[0]
            yshape = g.tensors[y].shape
            placed, reasons = [], []
            off = 0
            for i, t in enumerate(n.inputs):
                tt = g.tensors[t]
                delta = _delta(yshape, n.attrs["axis"], off)
                off += tt.shape[n.attrs["axis"]]
                p = producer.get(t)
                why = None
                if t == g.inputs[0] or p is None:
                    why = "it is the model input"
                elif t in v.parent:
                    why = "it is already a view of another tensor"
                elif t in n.inputs[:i]:
                    why = "it is concatenated twice"
                elif reaches_output(t):
                    why = "it is a model output"
                elif not _same_quant(tt, g.tensors[y]):
                    why = "it is requantized to the output's scale and zero point"
                if why is None:
                    why = try_view(t, y, delta, n)
                if why is None:
                    placed.append(i)
                else:
                    reasons.append(f"input {i} '{t}' copied: {why}")
            in_place[n.name] = placed
            if len(placed) == len(n.inputs):
                elided.add(n.name)
                notes[n.name] = "every input written in place by its producer (no copy)"
            else:
                notes[n.name] = "; ".join(([f"inputs {placed} written in place by their producers"] if placed
                                           else []) + reasons)
        # slices that are views of their input
        for n in g.nodes:
            if n.op != "slice_s8":
                continue
            x, s = n.inputs[0], n.outputs[0]
            why = None
            if s in v.parent:
                why = "it is written in place into a concat"
            elif n.attrs.get("step", 1) != 1:
                why = f"its step is {n.attrs['step']}"
            elif not n.attrs.get("identity", True):
                why = "it is requantized"
            elif reaches_output(s):
                why = "it is a model output"
            if why is None:
                why = try_view(s, x, _delta(g.tensors[x].shape, n.attrs["axis"], n.attrs["start"]), None)
            if why is None:
                elided.add(n.name)
                notes[n.name] = f"a {'dense' if v.dense(s) else 'strided'} view of '{x}' (no copy)"
            else:
                notes[n.name] = f"copied: {why}"

    inp = v.root(g.inputs[0])
    out_roots = {v.root(t) for t in g.outputs}
    bufs: dict[str, Buffer] = {}
    for i, n in enumerate(g.nodes):
        for t in list(n.inputs) + list(n.outputs):
            if g.tensors[t].data is not None:
                continue
            r = v.root(t)
            if r == inp or r in out_roots:
                continue
            if r not in bufs:
                bufs[r] = Buffer(r, g.tensors[r].nbytes, i, i)
            b = bufs[r]
            b.first, b.last = min(b.first, i), max(b.last, i)
            if t not in b.tensors:
                b.tensors.append(t)

    tensor_bound = 0
    for i in range(len(g.nodes)):
        tensor_bound = max(tensor_bound, sum(_align(b.size) for b in bufs.values() if b.first <= i <= b.last))
    total = sum(_align(b.size) for b in bufs.values())
    for i, n in enumerate(g.nodes):
        if scratch.get(n.name):
            bufs[SCRATCH + n.name] = Buffer(SCRATCH + n.name, int(scratch[n.name]), i, i)
    bound = 0
    for i in range(len(g.nodes)):
        bound = max(bound, sum(_align(b.size) for b in bufs.values() if b.first <= i <= b.last))

    orders = {
        "greedy-by-size": lambda b: (-b.size, b.first),
        "first-use": lambda b: (b.first, -b.size),
        "size-x-lifetime": lambda b: (-b.size * (b.last - b.first + 1), b.first),
        "longest-lifetime": lambda b: (-(b.last - b.first), -b.size),
    }
    best, best_name, best_offsets = None, "", {}
    for name, key in orders.items():
        arena = _first_fit(list(bufs.values()), key)
        if best is None or arena < best:
            best, best_name = arena, name
            best_offsets = {k: b.offset for k, b in bufs.items()}
        if best == bound:
            break
    if best is not None and best > bound:
        arena = _two_ended(list(bufs.values()), bound)
        if arena < best:
            best, best_name = arena, "two-ended"
            best_offsets = {k: b.offset for k, b in bufs.items()}
    for k, b in bufs.items():
        b.offset = best_offsets[k]

    storage, layouts = {}, {}
    for t, tensor in g.tensors.items():
        if tensor.data is not None:
            continue
        r, off, rs, ps = v.resolve(t)
        nbytes = off * np.dtype(tensor.dtype).itemsize
        if r == inp:
            storage[t] = ("input", nbytes)
        elif r in out_roots:
            storage[t] = ("output", nbytes)
        elif r in bufs:
            storage[t] = ("arena", bufs[r].offset + nbytes)
        else:
            continue
        if not v.dense(t):
            layouts[t] = (rs, ps)
    p = Plan(best or 0, bound, total, bufs, storage, best_name, layouts, elided, notes, in_place,
             scratch={k[len(SCRATCH):]: b.offset for k, b in bufs.items() if k.startswith(SCRATCH)},
             tensor_bound_bytes=tensor_bound, scratch_bytes=max((int(x) for x in scratch.values()), default=0))
    p.bound_without_views = plan(g, views=False, scratch=scratch).bound_bytes if views else bound
    return p
