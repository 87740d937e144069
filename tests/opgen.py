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


def _act_range(rng):
    a, b = sorted(int(v) for v in rng.integers(-128, 128, 2))
    return (a, b) if rng.random() < 0.5 else (-128, 127)


def _out_hw(h, k, s, p0, p1, d=1):
    return (h + p0 + p1 - d * (k - 1) - 1) // s + 1


@st.composite
def conv_case(draw, depthwise=False):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kh = draw(st.sampled_from([1, 3, 5, 2]))
    kw = draw(st.sampled_from([kh, kh, 1, 3]))
    sh, sw = draw(st.sampled_from([(1, 1), (2, 2), (1, 2), (2, 1)]))
    dil = draw(st.sampled_from([(1, 1), (1, 1), (1, 1), (2, 1)]))
    pads = tuple(draw(st.integers(0, max(0, k - 1))) for k in (kh, kw, kh, kw))
    c = draw(st.sampled_from([1, 2, 3, 5, 7, 8, 13, 16]))
    dm = draw(st.sampled_from([1, 1, 2])) if depthwise else 1
    o = c * dm if depthwise else draw(st.sampled_from([1, 3, 4, 6, 9, 16]))
    h = draw(st.integers(max(kh * dil[0] - pads[0] - pads[2], 1), 12))
    w = draw(st.integers(max(kw * dil[1] - pads[1] - pads[3], 1), 12))
    oh, ow = _out_hw(h, kh, sh, pads[0], pads[2], dil[0]), _out_hw(w, kw, sw, pads[1], pads[3], dil[1])
    g = Graph()
    iq, oq = _q(rng), _q(rng)
    g.add_tensor("x", (1, h, w, c), "int8", quant=iq)
    g.add_tensor("y", (1, oh, ow, o), "int8", quant=oq)
    wshape = (kh, kw, o) if depthwise else (o, kh, kw, c)
    g.add_const("w", rng.integers(-127, 128, wshape).astype(np.int8))
    g.add_const("bias", rng.integers(-2**15, 2**15, o).astype(np.int32))
    m, s = _mults(rng, o)
    g.add_const("mult", m)
    g.add_const("shift", s)
    amin, amax = _act_range(rng)
    attrs = dict(strides=(sh, sw), pads=pads, dilations=dil, in_zp=iq.zero_point, out_zp=oq.zero_point,
                 act_min=amin, act_max=amax)
    if depthwise:
        attrs["depth_multiplier"] = dm
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
    g.add_const("w", rng.integers(-127, 128, (o, f)).astype(np.int8))
    g.add_const("bias", rng.integers(-2**15, 2**15, o).astype(np.int32))
    m, s = _mults(rng, o)
    g.add_const("mult", m)
    g.add_const("shift", s)
    amin, amax = _act_range(rng)
    g.add_node("dense_s8", "layer", ["x", "w", "bias", "mult", "shift"], ["y"], in_zp=iq.zero_point,
               out_zp=oq.zero_point, act_min=amin, act_max=amax)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def pool_case(draw, op, channels=(1, 3, 8, 13)):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kh = draw(st.sampled_from([1, 2, 3, 5]))
    kw = draw(st.sampled_from([kh, kh, 2, 3]))
    sh, sw = draw(st.sampled_from([(1, 1), (2, 2), (kh, kw), (1, 2)]))
    pads = tuple(draw(st.integers(0, k // 2)) for k in (kh, kw, kh, kw))
    c = draw(st.sampled_from(list(channels)))
    h = draw(st.integers(max(kh - pads[0] - pads[2], 1), 11))
    w = draw(st.integers(max(kw - pads[1] - pads[3], 1), 11))
    if draw(st.booleans()) and op == "avgpool_s8":  # global average pool
        kh, kw, sh, sw, pads = h, w, h, w, (0, 0, 0, 0)
    oh, ow = _out_hw(h, kh, sh, pads[0], pads[2]), _out_hw(w, kw, sw, pads[1], pads[3])
    g = Graph()
    q = _q(rng)
    g.add_tensor("x", (1, h, w, c), "int8", quant=q)
    g.add_tensor("y", (1, oh, ow, c), "int8", quant=q)
    attrs = dict(kernel=(kh, kw), strides=(sh, sw), pads=pads)
    if op == "avgpool_s8":
        attrs.update(count_include_pad=draw(st.booleans()), zp=q.zero_point)
    g.add_node(op, "layer", ["x"], ["y"], **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g, seed


@st.composite
def add_case(draw):
    """y = add(x, dwconv1x1(x)): a residual add of two tensors with different quantization."""
    from edgepack.compress.quantize import ADD_LEFT_SHIFT

    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    c = draw(st.sampled_from([1, 3, 8, 13]))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    g = Graph()
    qa, qb, qo = _q(rng), _q(rng), QParams(float(rng.uniform(0.005, 0.2)), int(rng.integers(-128, 128)))
    g.add_tensor("x", (1, h, w, c), "int8", quant=qa)
    g.add_tensor("b", (1, h, w, c), "int8", quant=qb)
    g.add_tensor("y", (1, h, w, c), "int8", quant=qo)
    g.add_const("w", rng.integers(-127, 128, (1, 1, c)).astype(np.int8))
    g.add_const("bias", rng.integers(-2**10, 2**10, c).astype(np.int32))
    m, s = _mults(rng, c, 1e-3, 0.5)
    g.add_const("mult", m)
    g.add_const("shift", s)
    g.add_node("dwconv2d_s8", "branch", ["x", "w", "bias", "mult", "shift"], ["b"], strides=(1, 1),
               pads=(0, 0, 0, 0), dilations=(1, 1), in_zp=qa.zero_point, out_zp=qb.zero_point, act_min=-128,
               act_max=127, depth_multiplier=1)
    twice = 2 * max(qa.scale, qb.scale)
    ma, sa = quantize_multiplier(qa.scale / twice)
    mb, sb = quantize_multiplier(qb.scale / twice)
    mo, so = quantize_multiplier(twice / ((1 << ADD_LEFT_SHIFT) * qo.scale))
    amin, amax = _act_range(rng)
    g.add_node("add_s8", "layer", ["x", "b"], ["y"], a_zp=qa.zero_point, b_zp=qb.zero_point,
               left_shift=ADD_LEFT_SHIFT, a_mult=ma, a_shift=sa, b_mult=mb, b_shift=sb, out_mult=mo,
               out_shift=so, out_zp=qo.zero_point, act_min=amin, act_max=amax)
    g.inputs, g.outputs = ["x"], ["y"]
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
    g.add_node("binarize_s8", "bin", ["x"], ["xb"], zp=iq.zero_point, channels=c)
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
