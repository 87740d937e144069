"""Differential tests of the exponent-code kernels. The codebook kernels of --weights expN (conv2d_expcb,
dwconv2d_expcb, dense_expcb: bits 2..8, random bases, random codebooks per channel or per layer, hypothesis
shapes; the boards in test_boards_diff.py) and the power-of-two kernels of --weights pow2-N (conv2d_exp,
dwconv2d_exp, dense_exp): random bits 2..6,
top, shapes, attributes, codes and strategies (hypothesis); the TVM-generated C run on the host through cffi
equals reference.ops_exp on every output element. Fixed cases cover each path of conv2d_exp (packed channel
pairs split per window or per row, int32 MLA, shift-and-add, per-use decoding, odd channel counts, dilation)
and of dwconv2d_exp, the requantization's saturation and rounding ties, and one layer of each op on the
Cortex-M7 emulator (32-bit target: the 64-bit pair accumulators, SMLAL)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack.boards import get_board
from edgepack.build import emit
import opgen
from edgepack.codegen.kernels import conv2d_exp, conv2d_expcb, dwconv2d_exp
from edgepack.graph import Graph, QParams
from edgepack.pack import expcodes
from edgepack.reference.arith import quantize_multiplier
from edgepack.runners import Model, emulator, host, reference
from toolchains import require_board_tools
from test_ops_diff import check as diff_check

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _out_hw(h, k, s, p0, p1, d=1):
    return (h + p0 + p1 - d * (k - 1) - 1) // s + 1


def _codes_top(rng, bits, shape, bias, top_max):
    """Random codes < 2^bits and the largest top <= top_max the int32 accumulator bound allows."""
    codes = rng.integers(0, 1 << bits, shape)
    if rng.random() < 0.3:  # sparse rows: many zero codes
        codes[rng.random(shape) < 0.6] = 0
    top = top_max
    while top > 0 and expcodes.accumulator_bound(expcodes.decode(codes, bits, top), bias) >= 2**31:
        top -= 1
    assert expcodes.accumulator_bound(expcodes.decode(codes, bits, top), bias) < 2**31
    return expcodes.pack(codes, bits), top


def _mults(rng, n, lo=1e-6, hi=0.9):
    ms = [quantize_multiplier(float(v)) for v in np.exp(rng.uniform(np.log(lo), np.log(hi), n))]
    return np.array([m for m, _ in ms], np.int32), np.array([s for _, s in ms], np.int32)


def layer_graph(op, rng, x_shape, wshape, bits, top_max, attrs, strategy, bias_bits=15, mult_range=None,
                act=None):
    """A one-layer integer graph of ``op`` (conv2d_exp, dwconv2d_exp, dense_exp) with random data."""
    o = wshape[0]
    bias = rng.integers(-2**bias_bits, 2**bias_bits, o).astype(np.int64)
    codes, top = _codes_top(rng, bits, wshape, bias, top_max)
    iq = QParams(float(rng.uniform(0.01, 0.1)), int(rng.integers(-128, 128)))
    oq = QParams(float(rng.uniform(0.01, 0.1)), int(rng.integers(-128, 128)))
    if op == "dense_exp":
        y_shape = (1, o)
    else:
        kh, kw = wshape[1], wshape[2]
        (sh, sw), pads, dil = attrs["strides"], attrs["pads"], attrs["dilations"]
        y_shape = (1, _out_hw(x_shape[1], kh, sh, pads[0], pads[2], dil[0]),
                   _out_hw(x_shape[2], kw, sw, pads[1], pads[3], dil[1]), o)
    g = Graph()
    g.add_tensor("x", x_shape, "int8", quant=iq)
    g.add_tensor("y", y_shape, "int8", quant=oq)
    g.add_const("codes", codes)
    g.add_const("bias", bias.astype(np.int32))
    # the accumulator spans up to 2^31: multipliers mostly small enough that the outputs are not all
    # saturated, some above 1 (a left shift before the high multiply) when top is small
    m, s = _mults(rng, o, *(mult_range or (1e-7 * 2.0 ** -top if top > 10 else 1e-5, 4.0 * 2.0 ** -top)))
    g.add_const("mult", m)
    g.add_const("shift", s)
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2)) if rng.random() < 0.3 else (-128, 127)
    lo, hi = act or (lo, hi)
    g.add_node(op, "layer", ["x", "codes", "bias", "mult", "shift"], ["y"], bits=bits, top=top,
               wshape=tuple(wshape), in_zp=iq.zero_point, out_zp=oq.zero_point, act_min=lo, act_max=hi,
               exp_strategy=strategy, **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def check(g, seed, tmp_path_factory, n=3):
    """Host == reference on every element (the shared differential check of tests/test_ops_diff.py)."""
    return diff_check((g, seed), tmp_path_factory, n=n)


@st.composite
def conv_case(draw, depthwise=False):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    bits = draw(st.integers(2, 6))
    top_max = draw(st.sampled_from([0, 3, 6, 9, 14, 20, 30]))
    strategy = draw(st.sampled_from(["mul", "mul", "shift"]))
    kh = draw(st.sampled_from([1, 3, 3, 2, 5]))
    kw = draw(st.sampled_from([kh, kh, 1, 3]))
    sh, sw = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2)]))
    dil = draw(st.sampled_from([(1, 1), (1, 1), (1, 1), (2, 1), (1, 2)]))
    pads = tuple(draw(st.integers(0, max(0, k - 1))) for k in (kh, kw, kh, kw))
    c = draw(st.sampled_from([1, 2, 3, 4, 5, 8, 13, 16]))
    dm = draw(st.sampled_from([1, 1, 2, 3])) if depthwise else 1
    o = c * dm if depthwise else draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 12]))
    h = draw(st.integers(max(dil[0] * (kh - 1) + 1 - pads[0] - pads[2], 1), 9))
    w = draw(st.integers(max(dil[1] * (kw - 1) + 1 - pads[1] - pads[3], 1), 9))
    attrs = dict(strides=(sh, sw), pads=pads, dilations=dil)
    if depthwise:
        attrs["depth_multiplier"] = dm
        g = layer_graph("dwconv2d_exp", rng, (1, h, w, c), (o, kh, kw), bits, top_max, attrs, strategy)
    else:
        g = layer_graph("conv2d_exp", rng, (1, h, w, c), (o, kh, kw, c), bits, top_max, attrs, strategy)
    return g, seed


@st.composite
def dense_case(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    bits = draw(st.integers(2, 6))
    top_max = draw(st.sampled_from([0, 3, 6, 9, 14, 20, 30]))
    strategy = draw(st.sampled_from(["mul", "mul", "shift"]))
    f = draw(st.sampled_from([1, 3, 7, 8, 16, 31, 33, 64, 100, 257]))
    o = draw(st.sampled_from([1, 2, 3, 5, 8, 10, 17]))
    shape = (1, f) if f % 4 or f < 8 else (1, 2, 2, f // 4)  # a flattened NHWC input is read as F values
    g = layer_graph("dense_exp", rng, shape, (o, f), bits, top_max, {}, strategy)
    return g, seed


@SETTINGS
@given(conv_case())
def test_conv2d_exp(tmp_path_factory, case):
    check(*case, tmp_path_factory)


@SETTINGS
@given(conv_case(depthwise=True))
def test_dwconv2d_exp(tmp_path_factory, case):
    check(*case, tmp_path_factory)


@SETTINGS
@given(dense_case())
def test_dense_exp(tmp_path_factory, case):
    check(*case, tmp_path_factory)


def _conv(o, kh, kw, c, h, w, bits, top, strategy="mul", pads=(1, 1, 1, 1), strides=(1, 1), dil=(1, 1),
          seed=0, bias_bits=15):
    rng = np.random.default_rng(seed)
    attrs = dict(strides=strides, pads=pads, dilations=dil)
    return layer_graph("conv2d_exp", rng, (1, h, w, c), (o, kh, kw, c), bits, top, attrs, strategy,
                       bias_bits), seed


CONV_PATHS = [  # (case, expected plan)
    (dict(o=8, kh=3, kw=3, c=16, h=5, w=6, bits=4, top=6), dict(path="pair", split="window", pairs=2)),
    (dict(o=5, kh=3, kw=3, c=8, h=4, w=4, bits=3, top=9), dict(path="pair", channels=4)),  # odd O, f > 0
    (dict(o=3, kh=3, kw=3, c=128, h=3, w=4, bits=4, top=8), dict(path="pair", split="row", pairs=1)),
    (dict(o=4, kh=3, kw=2, c=12, h=6, w=7, bits=2, top=0, dil=(2, 2)), dict(path="pair")),
    (dict(o=6, kh=3, kw=3, c=8, h=5, w=5, bits=5, top=14), dict(path="mla", channels=4)),
    (dict(o=3, kh=2, kw=2, c=5, h=4, w=4, bits=6, top=20, strides=(2, 1)), dict(path="mla", channels=3)),
    (dict(o=7, kh=3, kw=3, c=4, h=5, w=5, bits=4, top=6, strategy="shift"), dict(path="shift", channels=4)),
    (dict(o=2, kh=5, kw=5, c=64, h=5, w=5, bits=5, top=12, pads=(2, 2, 2, 2)), dict(path="direct")),
]


@pytest.mark.parametrize("case,want", CONV_PATHS)
def test_conv2d_exp_paths(tmp_path_factory, case, want):
    g, seed = _conv(**case)
    n = g.nodes[0]
    plan = conv2d_exp.plan(n.attrs, {"x": g.tensors["x"].shape})
    assert {k: plan[k] for k in want} == want
    check(g, seed, tmp_path_factory)


def test_dwconv2d_exp_paths(tmp_path_factory):
    rng = np.random.default_rng(1)
    attrs = dict(strides=(1, 1), pads=(2, 2, 2, 2), dilations=(1, 1), depth_multiplier=2)
    g = layer_graph("dwconv2d_exp", rng, (1, 6, 6, 40), (80, 5, 5), 4, 6, attrs, "mul")
    plan = dwconv2d_exp.plan(g.nodes[0].attrs, {"x": g.tensors["x"].shape})
    assert plan["path"] == "mul" and plan["in_channels"] < 40  # several channel blocks and a tail
    check(g, 1, tmp_path_factory)
    attrs = dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), depth_multiplier=60)
    g = layer_graph("dwconv2d_exp", rng, (1, 9, 9, 1), (60, 9, 9), 3, 4, attrs, "mul")
    assert dwconv2d_exp.plan(g.nodes[0].attrs, {"x": g.tensors["x"].shape})["path"] == "direct"
    check(g, 2, tmp_path_factory)


def test_requantization_extremes(tmp_path_factory):
    """Accumulators near +-2^31, multipliers from 2^-30 to 2^10 (left shifts that saturate, right shifts of
    up to 31 bits); then many rounding ties (right shifts of 1..4 bits, small accumulators)."""
    rng = np.random.default_rng(7)
    for i, (bits, f, top) in enumerate([(2, 2, 22), (6, 3, 15), (4, 64, 8)]):
        g = layer_graph("dense_exp", rng, (1, f), (17, f), bits, top, {}, "mul", bias_bits=12,
                        mult_range=(2.0 ** -30, 2.0 ** 10))
        assert g.nodes[0].attrs["top"] == top
        assert (g.tensors["shift"].data > 0).any() and (g.tensors["shift"].data < -20).any()
        check(g, i, tmp_path_factory, n=8)
    g = layer_graph("dense_exp", rng, (1, 5), (64, 5), 3, 0, {}, "mul", bias_bits=4, mult_range=(2.0 ** -4, 0.99),
                    act=(-128, 127))
    check(g, 9, tmp_path_factory, n=16)


def test_exp_layers_on_cortex_m7(tmp_path_factory):
    board = require_board_tools("cortex-m7")
    rng = np.random.default_rng(11)
    conv = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    for i, g in enumerate([
            layer_graph("conv2d_exp", rng, (1, 6, 9, 16), (7, 3, 3, 16), 4, 6, conv, "mul", act=(-128, 127)),
            layer_graph("dwconv2d_exp", rng, (1, 5, 5, 8), (16, 3, 3), 5, 9, dict(conv, depth_multiplier=2), "mul"),
            layer_graph("dense_exp", rng, (1, 37), (9, 37), 3, 8, {}, "shift")]):
        folder = tmp_path_factory.mktemp("exp-m7")
        emit(g, board, folder, "pytest tests/test_exp_kernels.py")
        m = Model(folder)
        x = np.random.default_rng(i).integers(-128, 128, (3,) + tuple(g.tensors["x"].shape[1:])).astype(np.int8)
        assert np.array_equal(emulator.run_raw(m, x), reference.run_raw(m, x)), g.nodes[0].op


# ---- the codebook kernels (--weights expN: tuned base, integer codebook per channel or per layer) -------------

@SETTINGS
@given(opgen.expcb_case("conv2d_expcb"))
def test_conv2d_expcb(tmp_path_factory, case):
    diff_check(case, tmp_path_factory, n=3)


@SETTINGS
@given(opgen.expcb_case("dwconv2d_expcb"))
def test_dwconv2d_expcb(tmp_path_factory, case):
    diff_check(case, tmp_path_factory, n=3)


@SETTINGS
@given(opgen.expcb_case("dense_expcb"))
def test_dense_expcb(tmp_path_factory, case):
    diff_check(case, tmp_path_factory, n=3)


def test_conv2d_expcb_direct_path(tmp_path_factory):
    """A channel row too long for the stack (K = 5 * 5 * 128 > 2560): every weight decoded where it is used."""
    rng = np.random.default_rng(3)
    cb = np.zeros((2, 8), np.int16)
    cb[:, 1:] = np.round(0.7 ** np.arange(7) * 2**9)
    codes = rng.integers(0, 16, (2, 5, 5, 128))
    g = Graph()
    g.add_tensor("x", (1, 5, 5, 128), "int8", quant=QParams(0.05, 3))
    g.add_tensor("y", (1, 5, 5, 2), "int8", quant=QParams(0.05, -7))
    g.add_const("codes", expcodes.pack(codes, 4))
    g.add_const("codebook", cb)
    g.add_const("bias", np.array([1000, -5000], np.int32))
    m, s = _mults(rng, 2, 1e-6, 1e-4)
    g.add_const("mult", m)
    g.add_const("shift", s)
    attrs = dict(strides=(1, 1), pads=(2, 2, 2, 2), dilations=(1, 1), in_zp=3, out_zp=-7, act_min=-128, act_max=127)
    g.add_node("conv2d_expcb", "layer", ["x", "codes", "codebook", "bias", "mult", "shift"], ["y"], bits=4,
               wshape=(2, 5, 5, 128), **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    assert conv2d_expcb.plan(g.nodes[0].attrs, {})["path"] == "direct"
    diff_check((g, 3), tmp_path_factory, n=3)


@pytest.mark.parametrize("o,pads", [(5, (1, 1, 1, 1)), (4, (0, 0, 0, 0)), (3, (2, 0, 1, 1))])
def test_conv2d_expcb_channel_pairs(tmp_path_factory, o, pads):
    """The channel-pair path (attribute expcb_pairs): an odd channel count (the last pair redoes a channel),
    windows all inside the input, padding on some sides only."""
    rng = np.random.default_rng(o)
    cb = np.zeros((o, 16), np.int16)
    cb[:, 1:] = np.round(rng.uniform(0.5, 0.95, (o, 1)) ** np.arange(15) * 2**12)
    codes = rng.integers(0, 32, (o, 3, 3, 6))
    g = Graph()
    g.add_tensor("x", (1, 6, 7, 6), "int8", quant=QParams(0.05, -9))
    oh, ow = 6 + pads[0] + pads[2] - 2, 7 + pads[1] + pads[3] - 2
    g.add_tensor("y", (1, oh, ow, o), "int8", quant=QParams(0.05, 4))
    g.add_const("codes", expcodes.pack(codes, 5))
    g.add_const("codebook", cb)
    g.add_const("bias", rng.integers(-2**15, 2**15, o).astype(np.int32))
    m, s = _mults(rng, o, 1e-6, 1e-4)
    g.add_const("mult", m)
    g.add_const("shift", s)
    g.add_node("conv2d_expcb", "layer", ["x", "codes", "codebook", "bias", "mult", "shift"], ["y"], bits=5,
               wshape=(o, 3, 3, 6), strides=(1, 1), pads=pads, dilations=(1, 1), in_zp=-9, out_zp=4, act_min=-128,
               act_max=127, expcb_pairs=True)
    g.inputs, g.outputs = ["x"], ["y"]
    assert conv2d_expcb.plan(g.nodes[0].attrs, {})["channels"] == 2
    diff_check((g, o), tmp_path_factory, n=3)
