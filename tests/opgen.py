"""Hypothesis strategies for single-layer integer graphs with random shapes, attributes and data."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from edgepack.graph import Graph, QParams
from edgepack.reference.arith import quantize_multiplier


def _q(rng, lo=-128, hi=127):
    return QParams(float(rng.uniform(0.01, 0.1)), int(rng.integers(lo, hi + 1)))


def _mults(rng, n, lo=1e-4, hi=0.9):
    ms = [quantize_multiplier(float(v)) for v in np.exp(rng.uniform(np.log(lo), np.log(hi), n))]
    return np.array([m for m, _ in ms], np.int32), np.array([s for _, s in ms], np.int32)


def _layer_consts(g, rng, wshape, o):
    """Random int8 weights ``w``, int32 ``bias``, Q31 ``mult`` / ``shift`` for an ``o``-channel layer."""
    g.add_const("w", rng.integers(-127, 128, wshape).astype(np.int8))
    g.add_const("bias", rng.integers(-2**15, 2**15, o).astype(np.int32))
    m, s = _mults(rng, o)
    g.add_const("mult", m)
    g.add_const("shift", s)


def _act_range(rng):
    a, b = sorted(int(v) for v in rng.integers(-128, 128, 2))
    return (a, b) if rng.random() < 0.5 else (-128, 127)


def _out_hw(h, k, s, p0, p1, d=1):
    return (h + p0 + p1 - d * (k - 1) - 1) // s + 1


@st.composite
def conv_case(draw, depthwise=False, grouped=False):
    """conv2d_s8 (grouped: 1 < groups < C, RegNet-style, odd group sizes included) or dwconv2d_s8."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kh = draw(st.sampled_from([1, 3, 5, 2]))
    kw = draw(st.sampled_from([kh, kh, 1, 3]))
    sh, sw = draw(st.sampled_from([(1, 1), (2, 2), (1, 2), (2, 1)]))
    dil = draw(st.sampled_from([(1, 1), (1, 1), (1, 1), (2, 1)]))
    pads = tuple(draw(st.integers(0, max(0, k - 1))) for k in (kh, kw, kh, kw))
    groups = draw(st.sampled_from([2, 3, 4])) if grouped else 1
    c = groups * draw(st.sampled_from([1, 2, 3, 5])) if grouped else draw(st.sampled_from([1, 2, 3, 5, 7, 8, 13, 16]))
    dm = draw(st.sampled_from([1, 1, 2])) if depthwise else 1
    o = c * dm if depthwise else (groups * draw(st.sampled_from([1, 2, 3])) if grouped
                                  else draw(st.sampled_from([1, 3, 4, 6, 9, 16])))
    h = draw(st.integers(max(kh * dil[0] - pads[0] - pads[2], 1), 12))
    w = draw(st.integers(max(kw * dil[1] - pads[1] - pads[3], 1), 12))
    oh, ow = _out_hw(h, kh, sh, pads[0], pads[2], dil[0]), _out_hw(w, kw, sw, pads[1], pads[3], dil[1])
    g = Graph()
    iq, oq = _q(rng), _q(rng)
    g.add_tensor("x", (1, h, w, c), "int8", quant=iq)
    g.add_tensor("y", (1, oh, ow, o), "int8", quant=oq)
    _layer_consts(g, rng, (kh, kw, o) if depthwise else (o, kh, kw, c // groups), o)
    amin, amax = _act_range(rng)
    attrs = dict(strides=(sh, sw), pads=pads, dilations=dil, in_zp=iq.zero_point, out_zp=oq.zero_point,
                 act_min=amin, act_max=amax)
    if depthwise:
        attrs["depth_multiplier"] = dm
    if grouped:
        attrs["groups"] = groups
    g.add_node("dwconv2d_s8" if depthwise else "conv2d_s8", "layer", ["x", "w", "bias", "mult", "shift"], ["y"],
               **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def dense_case(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    f = draw(st.sampled_from([1, 3, 16, 31, 33, 64, 100, 257]))
    o = draw(st.sampled_from([1, 2, 5, 10, 17, 32]))
    g = Graph()
    iq, oq = _q(rng), _q(rng)
    g.add_tensor("x", (1, f), "int8", quant=iq)
    g.add_tensor("y", (1, o), "int8", quant=oq)
    _layer_consts(g, rng, (o, f), o)
    amin, amax = _act_range(rng)
    g.add_node("dense_s8", "layer", ["x", "w", "bias", "mult", "shift"], ["y"], in_zp=iq.zero_point,
               out_zp=oq.zero_point, act_min=amin, act_max=amax)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def pool_case(draw, op, dilated=False, channels=(1, 3, 8, 13)):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kh = draw(st.sampled_from([1, 2, 3, 5]))
    kw = draw(st.sampled_from([kh, kh, 2, 3]))
    sh, sw = draw(st.sampled_from([(1, 1), (2, 2), (kh, kw), (1, 2)]))
    dil = draw(st.sampled_from([(2, 2), (3, 2), (2, 1), (1, 3)])) if dilated else (1, 1)
    pads = tuple(draw(st.integers(0, (k - 1) * d // 2 + (k > 1))) if dilated else draw(st.integers(0, k // 2))
                 for k, d in ((kh, dil[0]), (kw, dil[1]), (kh, dil[0]), (kw, dil[1])))
    c = draw(st.sampled_from(list(channels)))
    h = draw(st.integers(max(dil[0] * (kh - 1) + 1 - pads[0] - pads[2], 1), 11))
    w = draw(st.integers(max(dil[1] * (kw - 1) + 1 - pads[1] - pads[3], 1), 11))
    if draw(st.booleans()) and op == "avgpool_s8":  # global average pool
        kh, kw, sh, sw, pads = h, w, h, w, (0, 0, 0, 0)
    oh, ow = _out_hw(h, kh, sh, pads[0], pads[2], dil[0]), _out_hw(w, kw, sw, pads[1], pads[3], dil[1])
    g = Graph()
    q = _q(rng)
    g.add_tensor("x", (1, h, w, c), "int8", quant=q)
    g.add_tensor("y", (1, oh, ow, c), "int8", quant=q)
    attrs = dict(kernel=(kh, kw), strides=(sh, sw), pads=pads)
    if dilated:
        attrs["dilations"] = dil
    if op == "avgpool_s8":
        attrs.update(count_include_pad=draw(st.booleans()), zp=q.zero_point)
    g.add_node(op, "layer", ["x"], ["y"], **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


def _rand_q(rng, lo=0.005, hi=0.2):
    return QParams(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), int(rng.integers(-128, 128)))


def _hw_shape(draw, four=True):
    if not four:
        return (1, draw(st.sampled_from([1, 3, 17, 64])))
    return (1, draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(st.sampled_from([1, 3, 8, 13])))


def _bcast(draw, shape):
    """shape with some dimensions (of H, W, C) set to 1: a broadcasting operand."""
    s = list(shape)
    for i in range(1, len(s)):
        if draw(st.booleans()):
            s[i] = 1
    return tuple(s)


def _branch(g, rng, name, x, xq, shape, q):
    """name = dwconv1x1(x) (4-D) or dense(x) (2-D): a computed tensor of x's shape in quantization q."""
    c = shape[-1]
    g.add_tensor(name, shape, "int8", quant=q)
    w, b = f"{name}_w", f"{name}_b"
    g.add_const(w, rng.integers(-127, 128, (1, 1, c) if len(shape) == 4 else (c, c)).astype(np.int8))
    g.add_const(b, rng.integers(-2**10, 2**10, c).astype(np.int32))
    m, s = _mults(rng, c, 1e-3, 0.5 if len(shape) == 4 else 0.05)
    g.add_const(f"{name}_m", m)
    g.add_const(f"{name}_s", s)
    common = dict(in_zp=xq.zero_point, out_zp=q.zero_point, act_min=-128, act_max=127)
    if len(shape) == 4:
        g.add_node("dwconv2d_s8", name, [x, w, b, f"{name}_m", f"{name}_s"], [name], strides=(1, 1),
                   pads=(0, 0, 0, 0), dilations=(1, 1), depth_multiplier=1, **common)
    else:
        g.add_node("dense_s8", name, [x, w, b, f"{name}_m", f"{name}_s"], [name], **common)


@st.composite
def add_case(draw, nary=False):
    """y = x0 +- x1 (+ x2 ...): TFLite ADD / SUB with different quantizations; an operand may broadcast
    ((N, 1, 1, C) or a constant), as the quantizer lowers add / sub / sum."""
    from edgepack.compress.quantize import ADD_LEFT_SHIFT

    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    four = draw(st.sampled_from([True, True, True, False]))
    shape = _hw_shape(draw, four)
    n = draw(st.integers(3, 5)) if nary else 2
    g = Graph()
    qs = [_rand_q(rng) for _ in range(n)]
    g.add_tensor("x", shape, "int8", quant=qs[0])
    ins = ["x"]
    for i in range(1, n):
        kind = draw(st.sampled_from(["branch", "branch", "bcast", "const"])) if four else "branch"
        if kind == "branch":
            _branch(g, rng, f"b{i}", "x", qs[0], shape, qs[i])
            ins.append(f"b{i}")
        else:
            bs = _bcast(draw, shape)
            if kind == "const":
                g.add_const(f"k{i}", rng.integers(-128, 128, bs).astype(np.int8))
                g.tensors[f"k{i}"].quant = qs[i]
                ins.append(f"k{i}")
            else:  # an activation that broadcasts: a global average pool of x
                g.add_tensor(f"p{i}", (1, 1, 1, shape[3]), "int8", quant=qs[0])
                g.add_node("avgpool_s8", f"p{i}", ["x"], [f"p{i}"], kernel=shape[1:3], strides=shape[1:3],
                           pads=(0, 0, 0, 0), count_include_pad=True, zp=qs[0].zero_point)
                ins.append(f"p{i}")
                qs[i] = qs[0]
    if draw(st.booleans()):
        ins = ins[::-1]
        qs = qs[::-1]
    qo = _rand_q(rng)
    g.add_tensor("y", shape, "int8", quant=qo)
    twice = 2 * max(q.scale for q in qs)
    ms = [quantize_multiplier(q.scale / twice) for q in qs]
    mo, so = quantize_multiplier(twice / ((1 << ADD_LEFT_SHIFT) * qo.scale))
    signs = [1] * n if nary else draw(st.sampled_from([[1, 1], [1, -1]]))
    amin, amax = _act_range(rng)
    g.add_node("add_s8", "layer", ins, ["y"], zps=[q.zero_point for q in qs], mults=[m for m, _ in ms],
               shifts=[s for _, s in ms], signs=signs, left_shift=ADD_LEFT_SHIFT, out_mult=mo, out_shift=so,
               out_zp=qo.zero_point, act_min=amin, act_max=amax)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def mul_case(draw):
    """y = a * b (TFLite MUL): same shapes, per-channel (N, 1, 1, C) x (N, H, W, C) (squeeze-excite), a constant,
    or any broadcast."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = _hw_shape(draw, draw(st.sampled_from([True, True, True, False])))
    g = Graph()
    qa, qb, qo = _rand_q(rng), _rand_q(rng), _rand_q(rng, 0.001, 0.5)
    g.add_tensor("x", shape, "int8", quant=qa)
    kind = draw(st.sampled_from(["same", "se", "const", "bcast"])) if len(shape) == 4 else "same"
    if kind == "same":
        _branch(g, rng, "b", "x", qa, shape, qb)
    elif kind == "se":
        g.add_tensor("p", (1, 1, 1, shape[3]), "int8", quant=qa)
        g.add_node("avgpool_s8", "p", ["x"], ["p"], kernel=shape[1:3], strides=shape[1:3], pads=(0, 0, 0, 0),
                   count_include_pad=True, zp=qa.zero_point)
        _branch(g, rng, "b", "p", qa, (1, 1, 1, shape[3]), qb)
    else:
        bs = (1, 1, 1, shape[3]) if kind == "const" else _bcast(draw, shape)
        g.add_const("b", rng.integers(-128, 128, bs).astype(np.int8))
        g.tensors["b"].quant = qb
    ins = ["x", "b"] if draw(st.booleans()) else ["b", "x"]
    qs = [qa, qb] if ins[0] == "x" else [qb, qa]
    g.add_tensor("y", shape, "int8", quant=qo)
    m, s = quantize_multiplier(qa.scale * qb.scale / qo.scale)
    amin, amax = _act_range(rng)
    g.add_node("mul_s8", "layer", ins, ["y"], a_zp=qs[0].zero_point, b_zp=qs[1].zero_point, out_mult=m,
               out_shift=s, out_zp=qo.zero_point, act_min=amin, act_max=amax)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def lut_case(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = draw(st.sampled_from([(1, 5), (1, 3, 4, 7), (1, 1, 1, 1), (1, 9, 2, 3)]))
    g = Graph()
    g.add_tensor("x", shape, "int8", quant=_q(rng))
    g.add_tensor("y", shape, "int8", quant=_q(rng))
    g.add_const("table", rng.integers(-128, 128, 256).astype(np.int8))
    g.add_node("lut_s8", "layer", ["x", "table"], ["y"])
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def prelu_case(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = _hw_shape(draw, draw(st.sampled_from([True, True, False])))
    c = shape[-1]
    iq, oq = _rand_q(rng), _rand_q(rng)
    g = Graph()
    g.add_tensor("x", shape, "int8", quant=iq)
    g.add_tensor("y", shape, "int8", quant=oq)
    g.add_const("alpha", rng.integers(-127, 128, c).astype(np.int8))
    a_scale = float(rng.uniform(0.001, 0.02))
    pm, ps = quantize_multiplier(iq.scale / oq.scale)
    nm, ns = quantize_multiplier(iq.scale * a_scale / oq.scale)
    g.add_node("prelu_s8", "layer", ["x", "alpha"], ["y"], in_zp=iq.zero_point, alpha_zp=0, pos_mult=pm,
               pos_shift=ps, neg_mult=nm, neg_shift=ns, out_zp=oq.zero_point)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def pad_case(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = _hw_shape(draw)
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    cp = draw(st.sampled_from([(0, 0), (0, 0), (1, 2), (3, 0)]))
    q = _q(rng)
    g = Graph()
    g.add_tensor("x", shape, "int8", quant=q)
    g.add_tensor("y", (1, shape[1] + pads[0] + pads[2], shape[2] + pads[1] + pads[3], shape[3] + sum(cp)), "int8",
                 quant=q)
    g.add_node("pad_s8", "layer", ["x"], ["y"], pads=pads, channel_pads=cp, value=int(rng.integers(-128, 128)))
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


def _requant_attrs(src, dst):
    from edgepack.compress.quantize import _rescale_attrs

    return _rescale_attrs(src, dst)


def _concat_node(g, name, ins, out, axis, qo):
    shapes = [g.tensors[t].shape for t in ins]
    shape = list(shapes[0])
    shape[axis] = sum(s[axis] for s in shapes)
    res = [_requant_attrs(g.tensors[t].quant, qo) for t in ins]
    g.add_tensor(out, tuple(shape), "int8", quant=qo)
    g.add_node("concat_s8", name, ins, [out], axis=axis, zps=[g.tensors[t].quant.zero_point for t in ins],
               mults=[m for _, m, _ in res], shifts=[s for _, _, s in res], identity=[i for i, _, _ in res],
               out_zp=qo.zero_point)


@st.composite
def concat_case(draw):
    """concat of 2..4 inputs along H, W or C (or the features of (N, F)): computed branches in the output's
    quantization (the memory plan lets their producers write in place), in another one (requantized copies), the
    model input itself, a clamp (whose kernel cannot write strided views); then the output feeds a conv or is
    the model output. With a channel concat some branches are also read by another layer (a depthwise conv,
    which reads strided views), and the result is concatenated again (a concat inside a concat)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    four = draw(st.sampled_from([True, True, True, False]))
    shape = _hw_shape(draw, four)
    axis = draw(st.sampled_from([1, 2, 3])) if four else 1
    g = Graph()
    qx, qo = _rand_q(rng), _rand_q(rng)
    g.add_tensor("x", shape, "int8", quant=qx)
    ins, extra = [], []
    for i in range(draw(st.integers(2, 4))):
        kind = draw(st.sampled_from(["same", "same", "other", "input", "clamp"] if four else
                                    ["same", "other", "input", "clamp"]))
        if kind == "input":
            ins.append("x")
            continue
        s = list(shape)
        s[axis] = draw(st.integers(1, 4)) if axis == 3 and kind != "clamp" else draw(st.integers(1, shape[axis]))
        s = tuple(s)
        name = f"in{i}"
        src = "x"
        if kind == "clamp":
            if s != shape:  # a slice of x (copied) as the clamp's input
                src = f"sl{i}"
                g.add_tensor(src, s, "int8", quant=qx)
                g.add_node("slice_s8", src, ["x"], [src], axis=axis, start=0, end=s[axis], step=1)
            g.add_tensor(name, s, "int8", quant=qx)
            lo, hi = _act_range(rng)
            g.add_node("clamp_s8", name, [src], [name], lo=lo, hi=hi)
            ins.append(name)
            continue
        q = qo if kind == "same" else _rand_q(rng)
        g.add_tensor(name, s, "int8", quant=q)
        m, sh = _mults(rng, s[-1], 1e-3, 0.3)
        g.add_const(f"{name}_b", rng.integers(-2**10, 2**10, s[-1]).astype(np.int32))
        g.add_const(f"{name}_m", m)
        g.add_const(f"{name}_s", sh)
        common = dict(in_zp=qx.zero_point, out_zp=q.zero_point, act_min=-128, act_max=127)
        if not four:
            g.add_const(f"{name}_w", rng.integers(-127, 128, (s[1], shape[1])).astype(np.int8))
            g.add_node("dense_s8", name, ["x", f"{name}_w", f"{name}_b", f"{name}_m", f"{name}_s"], [name], **common)
            ins.append(name)
            continue
        if s[1:3] != shape[1:3]:  # a smaller H / W: max-pool x down to it first
            src = f"pool{i}"
            g.add_tensor(src, (1, s[1], s[2], shape[3]), "int8", quant=qx)
            g.add_node("maxpool_s8", src, ["x"], [src], kernel=(shape[1] - s[1] + 1, shape[2] - s[2] + 1),
                       strides=(1, 1), pads=(0, 0, 0, 0))
        g.add_const(f"{name}_w", rng.integers(-127, 128, (s[3], 1, 1, shape[3])).astype(np.int8))
        g.add_node("conv2d_s8", name, [src, f"{name}_w", f"{name}_b", f"{name}_m", f"{name}_s"], [name],
                   strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), **common)
        if axis == 3 and draw(st.booleans()):
            extra.append(name)
        ins.append(name)
    if len(ins) < 2:
        ins.append("x")
    _concat_node(g, "layer", ins, "cat", axis, qo)
    last = "cat"
    if four and draw(st.booleans()):
        _branch(g, rng, "after", "cat", qo, g.tensors["cat"].shape, _rand_q(rng))
        last = "after"
    if extra:  # the extra readers' outputs and this result, concatenated again
        for t in extra:
            _branch(g, rng, f"{t}_dw", t, g.tensors[t].quant, g.tensors[t].shape, qo)
        _concat_node(g, "outer", [last] + [f"{t}_dw" for t in extra], "y", 3, _rand_q(rng))
        last = "y"
    g.inputs, g.outputs = ["x"], [last]
    return g, seed


@st.composite
def slice_case(draw):
    """slices of x along H, W or C (any start, step 1 or more): views of x where their readers allow (a conv
    reading a strided view), copies otherwise; some requantized (a slice feeding a concat in another scale)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    four = draw(st.sampled_from([True, True, True, False]))
    shape = _hw_shape(draw, four) if not four else (1, draw(st.integers(2, 7)), draw(st.integers(2, 7)),
                                                     draw(st.sampled_from([2, 3, 8, 13])))
    axis = draw(st.sampled_from([1, 2, 3])) if four else 1
    n = shape[axis]
    start = draw(st.integers(0, n - 1))
    step = draw(st.sampled_from([1, 1, 2, 3]))
    end = draw(st.integers(start + 1, n))
    length = len(range(start, end, step))
    qx = _rand_q(rng)
    g = Graph()
    g.add_tensor("x", shape, "int8", quant=qx)
    s = list(shape)
    s[axis] = length
    s = tuple(s)
    requant = draw(st.booleans())
    qs = _rand_q(rng) if requant else qx
    same, m, sh = _requant_attrs(qx, qs)
    g.add_tensor("s", s, "int8", quant=qs)
    g.add_node("slice_s8", "layer", ["x"], ["s"], axis=axis, start=start, end=start + (length - 1) * step + 1,
               step=step, identity=same, in_zp=qx.zero_point, mult=m, shift=sh, out_zp=qs.zero_point)
    last = "s"
    reader = draw(st.sampled_from(["none", "conv", "clamp"])) if four else "none"
    if reader == "conv":
        _branch(g, rng, "r", "s", qs, s, _rand_q(rng))
        last = "r"
    elif reader == "clamp":
        g.add_tensor("r", s, "int8", quant=qs)
        g.add_node("clamp_s8", "r", ["s"], ["r"], lo=-100, hi=100)
        last = "r"
    g.inputs, g.outputs = ["x"], [last]
    return g, seed


@st.composite
def clamp_case(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = draw(st.sampled_from([(1, 5), (1, 3, 4, 7), (1, 1, 1, 1), (1, 64)]))
    lo, hi = _act_range(rng)
    g = Graph()
    q = _q(rng)
    g.add_tensor("x", shape, "int8", quant=q)
    g.add_tensor("y", shape, "int8", quant=q)
    g.add_node("clamp_s8", "layer", ["x"], ["y"], lo=lo, hi=hi)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def softmax_case(draw):
    from edgepack.compress.quantize import SOFTMAX_LUT_BITS

    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.sampled_from([1, 2, 10, 37, 100, 1000]))
    q = QParams(float(np.exp(rng.uniform(np.log(0.005), np.log(0.5)))), int(rng.integers(-128, 128)))
    g = Graph()
    g.add_tensor("x", (1, n), "int8", quant=q)
    g.add_tensor("y", (1, n), "int8", quant=QParams(1 / 256, -128))
    lut = np.round(np.exp(-q.scale * np.arange(256)) * (1 << SOFTMAX_LUT_BITS)).astype(np.int32)
    g.add_const("lut", lut)
    g.add_node("softmax_s8", "layer", ["x", "lut"], ["y"])
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def binary_case(draw, out_bits=True):
    """x (int8) -> binarize_s8 -> bconv2d_b1 (bits out) or bconv2d_b1_s8 (int8 out), random shapes."""
    from edgepack.reference.ops_binary import _pack

    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    full = draw(st.booleans()) and not out_bits  # a binary dense after a flatten: one full-size window
    c = draw(st.sampled_from([1, 5, 31, 32, 33, 64, 70]))
    o = draw(st.sampled_from([1, 3, 32, 33, 40]))
    if full:
        h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        kh, kw, sh, sw, pads, dil = h, w, 1, 1, (0, 0, 0, 0), (1, 1)
    else:
        kh = draw(st.sampled_from([1, 3, 3, 2]))
        kw = draw(st.sampled_from([kh, kh, 1]))
        sh, sw = draw(st.sampled_from([(1, 1), (2, 2), (1, 2)]))
        dil = draw(st.sampled_from([(1, 1), (1, 1), (2, 2)]))
        pads = tuple(draw(st.integers(0, k - 1 if k > 1 else 0)) for k in (kh, kw, kh, kw))
        h = draw(st.integers(max(dil[0] * (kh - 1) + 1 - pads[0] - pads[2], 1), 9))
        w = draw(st.integers(max(dil[1] * (kw - 1) + 1 - pads[1] - pads[3], 1), 9))
    oh, ow = _out_hw(h, kh, sh, pads[0], pads[2], dil[0]), _out_hw(w, kw, sw, pads[1], pads[3], dil[1])
    cw, ow_words = (c + 31) // 32, (o + 31) // 32
    g = Graph()
    iq = _q(rng)
    g.add_tensor("x", (1, h, w, c), "int8", quant=iq)
    g.add_tensor("xb", (1, h, w, cw), "uint32")
    if draw(st.booleans()):  # per-channel thresholds (learned RSign thresholds), extremes included
        tq = rng.integers(-128, 129, c)
        tq[rng.random(c) < 0.1] = rng.choice([-128, 128])
    else:  # the plain sign: every threshold is the zero point
        tq = np.full(c, iq.zero_point)
    g.add_const("thresh_in", tq.astype(np.int16))
    g.add_node("binarize_s8", "bin", ["x", "thresh_in"], ["xb"], channels=c)
    g.add_const("w", _pack(rng.random((o, kh, kw, c)) < 0.5))
    attrs = dict(channels=c, strides=(sh, sw), pads=pads, dilations=dil)
    k = kh * kw * c
    if out_bits:
        g.add_tensor("y", (1, oh, ow, ow_words), "uint32")
        g.add_const("thresh", rng.integers(-k - 1, k + 2, o).astype(np.int32))
        g.add_node("bconv2d_b1", "layer", ["xb", "w", "thresh"], ["y"], **attrs)
    else:
        oq = _q(rng)
        g.add_tensor("y", (1, oh, ow, o), "int8", quant=oq)
        s_acc = int(rng.integers(0, 9))
        g.add_const("bias", rng.integers(-k << s_acc, (k << s_acc) + 1, o).astype(np.int32))
        m, s = _mults(rng, o, 1e-4, 0.5)
        g.add_const("mult", m)
        g.add_const("shift", s)
        amin, amax = _act_range(rng)
        g.add_node("bconv2d_b1_s8", "layer", ["xb", "w", "bias", "mult", "shift"], ["y"], acc_shift=s_acc,
                   out_zp=oq.zero_point, act_min=amin, act_max=amax, **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def sparse_case(draw, op="conv2d_s8_csr"):
    """A conv2d_s8 / dense_s8 case whose weights keep a random density (0 included: empty rows and a layer
    with no nonzero at all), stored as CSR or bitmask rows (pack.sparse) as ``op`` says."""
    from edgepack.pack import sparse

    base, enc = op.rsplit("_", 1)
    g, seed = draw(conv_case() if base == "conv2d_s8" else dense_case())
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]))
    rng = np.random.default_rng(seed + 1)
    w = g.tensors["w"].data.copy()
    w[rng.random(w.shape) >= density] = 0
    values, second, rowptr = sparse.pack(w, enc)
    n = g.nodes[0]
    del g.tensors["w"]
    g.add_const("values", values)
    g.add_const("second", second)
    g.add_const("rowptr", rowptr)
    n.op = op
    n.inputs = ["x", "values", "second", "rowptr", "bias", "mult", "shift"]
    n.attrs["wshape"] = tuple(int(v) for v in w.shape)
    return g, seed


# ---- issue 14 part B: layout, resize, transposed convolution ----------------------------------------------
@st.composite
def transpose_case(draw):
    """transpose_s8 of a random 2- to 6-D int8 tensor (batch first), any permutation of the other axes."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rank = draw(st.integers(2, 6))
    dims = [int(v) for v in draw(st.lists(st.sampled_from([1, 2, 3, 4, 5, 7]), min_size=rank - 1,
                                          max_size=rank - 1))]
    rest = list(draw(st.permutations(range(1, rank))))
    shape, perm = (1, *dims), (0, *rest)
    g = Graph()
    q = _q(rng)
    g.add_tensor("x", shape, "int8", quant=q)
    g.add_tensor("y", tuple(shape[p] for p in perm), "int8", quant=q)
    g.add_node("transpose_s8", "layer", ["x"], ["y"], shape=shape, perm=perm)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def resize_case(draw, mode):
    """resize_nearest_s8 / resize_bilinear_s8: integer scales, arbitrary output sizes (down-sampling too), the
    align_corners and half_pixel_centers variants."""
    from edgepack.reference.ops_spatial import nearest_table

    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    if draw(st.booleans()):
        f = draw(st.sampled_from([1, 2, 3, 4]))
        oh, ow = h * f, w * draw(st.sampled_from([f, 1, 2]))
    else:
        oh, ow = draw(st.integers(1, 17)), draw(st.integers(1, 17))
    ac, hp = draw(st.sampled_from([(False, False), (True, False), (False, True)]))
    c = draw(st.sampled_from([1, 3, 8, 13]))
    g = Graph()
    q = _q(rng)
    g.add_tensor("x", (1, h, w, c), "int8", quant=q)
    g.add_tensor("y", (1, oh, ow, c), "int8", quant=q)
    if mode == "nearest":
        g.add_const("iy", nearest_table(oh, h, ac, hp))
        g.add_const("ix", nearest_table(ow, w, ac, hp))
        g.add_node("resize_nearest_s8", "layer", ["x", "iy", "ix"], ["y"], align_corners=ac, half_pixel_centers=hp)
    else:
        g.add_node("resize_bilinear_s8", "layer", ["x"], ["y"], size=(oh, ow), align_corners=ac,
                   half_pixel_centers=hp)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def conv_transpose_case(draw):
    """conv_transpose2d_s8: stride 1-3, dilation, asymmetric pads (cropping the full output), output_padding."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kh = draw(st.sampled_from([1, 2, 3, 4]))
    kw = draw(st.sampled_from([kh, kh, 1, 3]))
    sh, sw = draw(st.sampled_from([(1, 1), (2, 2), (2, 2), (3, 2), (1, 2)]))
    dh, dw = draw(st.sampled_from([(1, 1), (1, 1), (2, 1)]))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    fh, fw = (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1
    oph, opw = draw(st.integers(0, max(sh, dh) - 1)), draw(st.integers(0, max(sw, dw) - 1))
    pt, pb = draw(st.integers(0, (fh - 1) // 2)), draw(st.integers(0, (fh - 1) // 2))
    pl, pr = draw(st.integers(0, (fw - 1) // 2)), draw(st.integers(0, (fw - 1) // 2))
    c = draw(st.sampled_from([1, 2, 3, 5, 8, 13]))
    o = draw(st.sampled_from([1, 3, 4, 7, 16]))
    oh, ow = fh - pt - pb + oph, fw - pl - pr + opw
    g = Graph()
    iq, oq = _q(rng), _q(rng)
    g.add_tensor("x", (1, h, w, c), "int8", quant=iq)
    g.add_tensor("y", (1, oh, ow, o), "int8", quant=oq)
    _layer_consts(g, rng, (o, kh, kw, c), o)
    amin, amax = _act_range(rng)
    g.add_node("conv_transpose2d_s8", "layer", ["x", "w", "bias", "mult", "shift"], ["y"], strides=(sh, sw),
               pads=(pt, pl, pb, pr), output_padding=(oph, opw), dilations=(dh, dw), in_zp=iq.zero_point,
               out_zp=oq.zero_point, act_min=amin, act_max=amax)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def rnn_case(draw, cell):
    """lstm_s8 / gru_s8: random sizes and sequence lengths, random gate scales, both the sequence and the
    last-step output, both cell-state formats (Q3.12, Q4.11)."""
    from edgepack.reference.ops_rnn import SIGMOID_TABLE

    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    gates = 4 if cell == "lstm" else 3
    steps, f, h = draw(st.integers(1, 6)), draw(st.sampled_from([1, 3, 8, 13])), draw(st.sampled_from([1, 2, 5, 8, 16]))
    last = draw(st.booleans())
    iq, hq = _q(rng), _q(rng)
    g = Graph()
    g.add_tensor("x", (1, 1, f, steps), "int8", quant=iq)
    g.add_tensor("y", (1, h) if last else (1, 1, h, steps), "int8", quant=hq)
    g.add_const("wx", rng.integers(-127, 128, (gates, h, f)).astype(np.int8))
    g.add_const("wh", rng.integers(-127, 128, (gates, h, h)).astype(np.int8))
    g.add_const("bx", rng.integers(-2**14, 2**14, (gates, h)).astype(np.int32))
    g.add_const("bh", rng.integers(-2**14, 2**14, (gates, h)).astype(np.int32))
    for side, n_in in (("x", f), ("h", h)):  # gate scale s_in s_w / 2^-12 such that the sums span int16
        m, s = _mults(rng, gates, 0.3 / (128 * n_in), 30.0 / (128 * n_in))
        g.add_const("m" + side, m)
        g.add_const("s" + side, s)
    g.add_const("table", SIGMOID_TABLE)
    hm, hs = quantize_multiplier(float(2.0**-30 / hq.scale))
    attrs = dict(steps=steps, hidden=h, h_zp=hq.zero_point, h_mult=hm, h_shift=hs, last=last)
    if cell == "lstm":
        attrs["cell_frac"] = draw(st.sampled_from([11, 12]))
    g.add_node(f"{cell}_s8", "layer", ["x", "wx", "wh", "bx", "bh", "mx", "sx", "mh", "sh", "table"], ["y"], **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


# ---- issue 14 part A: element-wise ops, concat / slice / pad on the boards ---------------------------------
@st.composite
def chain_case(draw):
    """Every op of issue 14 part A in one graph, random odd shapes and quantizations, for the emulated boards:
    x -> conv1x1 -> lut -> mul by its global average (squeeze-excite) -> add / sub of a per-channel constant ->
    prelu -> concat (channels: in place, strided, with a depthwise reader; or H / W) with a requantized input ->
    slice (a view or a copy) -> pad -> y."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (1, draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.sampled_from([1, 3, 5, 8, 13])))
    c = shape[3]
    g = Graph()
    qx = _rand_q(rng)
    g.add_tensor("x", shape, "int8", quant=qx)
    qa, ql, qm, qs, qp, qo = (_rand_q(rng) for _ in range(6))
    _branch(g, rng, "a", "x", qx, shape, qa)
    g.add_tensor("l", shape, "int8", quant=ql)
    g.add_const("table", rng.integers(-128, 128, 256).astype(np.int8))
    g.add_node("lut_s8", "lut", ["a", "table"], ["l"])
    g.add_tensor("se", (1, 1, 1, c), "int8", quant=ql)
    g.add_node("avgpool_s8", "se", ["l"], ["se"], kernel=shape[1:3], strides=shape[1:3], pads=(0, 0, 0, 0),
               count_include_pad=True, zp=ql.zero_point)
    g.add_tensor("m", shape, "int8", quant=qm)
    mm, ms = quantize_multiplier(ql.scale * ql.scale / qm.scale)
    g.add_node("mul_s8", "mul", ["l", "se"], ["m"], a_zp=ql.zero_point, b_zp=ql.zero_point, out_mult=mm,
               out_shift=ms, out_zp=qm.zero_point, act_min=-128, act_max=127)
    qk = _rand_q(rng)
    g.add_const("k", rng.integers(-128, 128, (1, 1, 1, c)).astype(np.int8))
    g.tensors["k"].quant = qk
    twice = 2 * max(qm.scale, qk.scale)
    (m1, s1), (m2, s2) = quantize_multiplier(qm.scale / twice), quantize_multiplier(qk.scale / twice)
    mo, so = quantize_multiplier(twice / ((1 << 20) * qs.scale))
    g.add_tensor("s", shape, "int8", quant=qs)
    g.add_node("add_s8", "sub", ["m", "k"], ["s"], zps=[qm.zero_point, qk.zero_point], mults=[m1, m2],
               shifts=[s1, s2], signs=[1, draw(st.sampled_from([1, -1]))], left_shift=20, out_mult=mo, out_shift=so,
               out_zp=qs.zero_point, act_min=-128, act_max=127)
    g.add_tensor("p", shape, "int8", quant=qp)
    g.add_const("alpha", rng.integers(-127, 128, c).astype(np.int8))
    pm, ps = quantize_multiplier(qs.scale / qp.scale)
    nm, ns = quantize_multiplier(qs.scale * 0.01 / qp.scale)
    g.add_node("prelu_s8", "prelu", ["s", "alpha"], ["p"], in_zp=qs.zero_point, alpha_zp=0, pos_mult=pm,
               pos_shift=ps, neg_mult=nm, neg_shift=ns, out_zp=qp.zero_point)
    axis = draw(st.sampled_from([3, 3, 1, 2]))
    _branch(g, rng, "d", "p", qp, shape, qo)  # in the concat's quantization: written in place
    _branch(g, rng, "e", "p", qp, shape, _rand_q(rng))  # another: requantized by the concat
    _concat_node(g, "cat", ["d", "e", "p"] if draw(st.booleans()) else ["e", "d"], "cat", axis, qo)
    cs = g.tensors["cat"].shape
    n = cs[axis]
    start = draw(st.integers(0, n - 1))
    end = draw(st.integers(start + 1, n))
    step = draw(st.sampled_from([1, 1, 2]))
    length = len(range(start, end, step))
    ss = list(cs)
    ss[axis] = length
    g.add_tensor("sl", tuple(ss), "int8", quant=qo)
    g.add_node("slice_s8", "slice", ["cat"], ["sl"], axis=axis, start=start, end=start + (length - 1) * step + 1,
               step=step, identity=True)
    src = "sl"
    if draw(st.booleans()):  # a strided reader: the slice can be a view
        _branch(g, rng, "r", "sl", qo, tuple(ss), qo)
        src = "r"
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    cp = draw(st.sampled_from([(0, 0), (1, 2)]))
    g.add_tensor("y", (1, ss[1] + pads[0] + pads[2], ss[2] + pads[1] + pads[3], ss[3] + sum(cp)), "int8", quant=qo)
    g.add_node("pad_s8", "pad", [src], ["y"], pads=pads, channel_pads=cp, value=int(rng.integers(-128, 128)))
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def expcb_case(draw, op):
    """conv2d_expcb, dwconv2d_expcb or dense_expcb (``--weights expN``): the shapes and attributes of
    conv_case / dense_case, bits 2..8, random codes (sometimes mostly zeros), a codebook per channel or per
    layer: round(q^k * 2^P) with a random base q per row (as the quantizer builds it) or arbitrary entries in
    [0, 2^P] (repeats, zeros), P the largest <= 14 for which the int32 accumulator bound holds (as the packer
    proves it)."""
    from edgepack.pack import expcodes

    base = {"conv2d_expcb": conv_case(), "dwconv2d_expcb": conv_case(depthwise=True),
            "dense_expcb": dense_case()}[op]
    g0, seed = draw(base)
    rng = np.random.default_rng(seed ^ 0x5EED)
    bits = draw(st.integers(2, 8))
    per_channel = draw(st.booleans())
    kind = draw(st.sampled_from(["tuned", "tuned", "random"]))
    n0 = g0.nodes[0]
    w8 = g0.tensors["w"].data
    wshape = tuple(int(v) for v in (np.moveaxis(w8, 2, 0).shape if op == "dwconv2d_expcb" else w8.shape))
    o, nc = wshape[0], 1 << (bits - 1)
    rows = o if per_channel else 1
    codes = rng.integers(0, 1 << bits, wshape)
    if rng.random() < 0.3:
        codes[rng.random(wshape) < 0.6] = 0
    bias = g0.tensors["bias"].data.astype(np.int64)
    q = rng.uniform(0.2, 0.99, (rows, 1))
    frac = rng.random((rows, nc - 1))
    for p in range(14, -1, -1):
        cb = np.zeros((rows, nc), np.int64)
        cb[:, 1:] = np.round(q ** np.arange(nc - 1) * (1 << p)) if kind == "tuned" else np.round(frac * (1 << p))
        if expcodes.accumulator_bound(expcodes.decode_codebook(codes, bits, cb), bias) < 2**31:
            break
    g = Graph()
    for t in ("x", "y"):
        g.add_tensor(t, g0.tensors[t].shape, "int8", quant=g0.tensors[t].quant)
    g.add_const("codes", expcodes.pack(codes, bits))
    g.add_const("codebook", cb.astype(np.int16))
    g.add_const("bias", bias.astype(np.int32))
    m, s = _mults(rng, o, 1e-5 * 2.0 ** -p, 4.0 * 2.0 ** -p)  # outputs not all saturated, some left shifts
    g.add_const("mult", m)
    g.add_const("shift", s)
    g.add_node(op, "layer", ["x", "codes", "codebook", "bias", "mult", "shift"], ["y"], bits=bits, wshape=wshape,
               **n0.attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed
