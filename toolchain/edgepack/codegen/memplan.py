"""Static arena plan from tensor lifetimes.

Every activation that is neither the model input (read from the caller's buffer) nor the model output
(written to the caller's buffer) gets an offset in one static arena. A tensor lives from the op that writes it
to the last op that reads it; ``reshape`` outputs share their input's storage. A kernel's inputs and output
never overlap (no in-place ops), so the *liveness bound* -- the largest sum of aligned tensor sizes live at
any one op -- is a lower bound on any arena for this op order.

The planner tries several placement orders (TFLite Micro's greedy-by-size, by first use, by
size x lifetime) with first-fit offsets, and a two-ended (ping-pong) placement capped at the bound, and
keeps the smallest arena; the report gives arena / bound.

A kernel may need scratch memory for its own duration (the int16 im2col columns of the SMLAD schedules):
``scratch`` maps a node's name to its bytes, planned as a buffer live at that node only. The bound without
scratch (``tensor_bound_bytes``) plus the largest scratch bounds the bound with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 4


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
    storage: dict  # tensor name -> ("input" | "output" | "arena", offset)
    order: str = ""
    scratch: dict = field(default_factory=dict)  # node name -> arena offset of its scratch buffer
    tensor_bound_bytes: int = 0  # liveness bound of the activations alone
    scratch_bytes: int = 0  # the largest scratch buffer


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


SCRATCH = "scratch:"  # buffer-name prefix of a node's scratch


def storage_root(g):
    """tensor -> the tensor whose storage it uses: ``reshape`` outputs share their input's."""
    root = {}

    def find(t):
        while t in root:
            t = root[t]
        return t

    for n in g.nodes:
        if n.op == "reshape":
            root[n.outputs[0]] = find(n.inputs[0])
    return find


def plan(g, scratch: dict | None = None) -> Plan:
    """Plan the arena of an integer-dialect graph (nodes in execution order); ``scratch``: node name -> bytes."""
    scratch = scratch or {}
    find = storage_root(g)
    inp = find(g.inputs[0])
    out_roots = {find(t) for t in g.outputs}
    if inp in out_roots:
        raise ValueError("the model output is its input; nothing to compute")

    bufs: dict[str, Buffer] = {}
    for i, n in enumerate(g.nodes):
        for t in list(n.inputs) + list(n.outputs):
            if g.tensors[t].data is not None:
                continue
            r = find(t)
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

    storage = {}
    for t, tensor in g.tensors.items():
        if tensor.data is not None:
            continue
        r = find(t)
        if r == inp:
            storage[t] = ("input", 0)
        elif r in out_roots:
            storage[t] = ("output", 0)
        elif r in bufs:
            storage[t] = ("arena", bufs[r].offset)
    offsets = {k[len(SCRATCH):]: b.offset for k, b in bufs.items() if k.startswith(SCRATCH)}
    return Plan(best or 0, bound, total, bufs, storage, best_name, offsets, tensor_bound,
                max((int(v) for v in scratch.values()), default=0))
