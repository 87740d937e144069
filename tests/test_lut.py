"""Element-wise functions as int8 lookup tables: every table entry is the correctly rounded value of the float
function at that int8 input, given the input and output quantization (checked against independent 50-digit
mpmath definitions); TFLite's fixed output scales; a chain of element-wise ops (x * sigmoid(x), GELU's erf form,
HardSwish's clamp form) is one table, equal to the table of the function it computes; the quantizer records the
choice for the card.

mpmath comes with torch (through sympy)."""

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepack.compress.quantize import PointwiseRegion, activation_qparams, build_lut, pointwise_regions, quantize
from edgepack.graph import Graph, QParams, infer_shapes
from edgepack.pointwise import UNARY

mp.mp.dps = 50


def _softplus(x, beta=1, threshold=20):
    return x if beta * x > threshold else mp.log(1 + mp.exp(beta * x)) / beta


def _elu(x, alpha=1):
    return x if x > 0 else alpha * (mp.exp(x) - 1)


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        return x / 2 * (1 + mp.tanh(mp.sqrt(2 / mp.pi) * (x + mp.mpf("0.044715") * x ** 3)))
    return x / 2 * (1 + mp.erf(x / mp.sqrt(2)))


def _clip(v, lo, hi):
    return min(max(v, lo), hi)


SELU_A, SELU_S = mp.mpf("1.6732632423543772848170429916717"), mp.mpf("1.0507009873554804934193349852946")
# op -> (exact function of an mpf and the attrs, attrs to test)
EXACT = {
    "relu": (lambda x: max(x, 0), {}),
    "clip": (lambda x, min, max: _clip(x, min, max), {"min": -0.5, "max": 1.25}),
    "sigmoid": (lambda x: 1 / (1 + mp.exp(-x)), {}),
    "tanh": (mp.tanh, {}),
    "hardsigmoid": (lambda x, alpha, beta: _clip(alpha * x + beta, 0, 1), {"alpha": 1 / 6, "beta": 0.5}),
    "hardswish": (lambda x: x * _clip(x + 3, 0, 6) / 6, {}),
    "silu": (lambda x: x / (1 + mp.exp(-x)), {}),
    "leaky_relu": (lambda x, alpha: x if x >= 0 else alpha * x, {"alpha": 0.1}),
    "elu": (_elu, {"alpha": 0.7}),
    "selu": (lambda x: SELU_S * _elu(x, SELU_A), {}),
    "celu": (lambda x, alpha: max(x, 0) + min(0, alpha * (mp.exp(x / alpha) - 1)), {"alpha": 1.5}),
    "gelu": (_gelu, {"approximate": "none"}),
    "erf": (mp.erf, {}),
    "exp": (mp.exp, {}),
    "neg": (lambda x: -x, {}),
    "abs": (abs, {}),
    "softplus": (_softplus, {"beta": 1.0, "threshold": 20.0}),
    "mish": (lambda x: x * mp.tanh(_softplus(x)), {}),
    "pow": (lambda x, exponent: x ** int(exponent), {"exponent": 3.0}),
    "sqrt": (lambda x: mp.sqrt(x) if x >= 0 else None, {}),
    "reciprocal": (lambda x: 1 / x if x != 0 else None, {}),
    "log": (lambda x: mp.log(x) if x > 0 else (None if x < 0 else -mp.inf), {}),
}
EXTRA = [("gelu", {"approximate": "tanh"}), ("pow", {"exponent": 2.0})]


def test_every_table_function_has_an_exact_twin():
    assert set(EXACT) == set(UNARY)


def _region(op, attrs):
    g = Graph()
    g.add_tensor("x", (1, 4))
    g.add_node(op, "f", ["x"], ["y"], **attrs)
    infer_shapes(g)
    return g, PointwiseRegion("x", g.nodes, "y")


def _expected(op, attrs, iq, oq):
    """The correctly rounded entries (None where within 1e-9 of a rounding tie: either neighbour is correct),
    with the table's conventions where f is undefined (real 0) or infinite (the int8 bound)."""
    f = EXACT[op][0]
    out = []
    for q in range(-128, 128):
        x = mp.mpf(float(iq.scale)) * (q - iq.zero_point)  # the real value of the int8 input, as the quantizer has it
        y = f(x, **attrs)
        if y is None and op == "reciprocal":
            out.append(127)
            continue
        if y is None:
            y = mp.mpf(0)
        if y == -mp.inf:
            out.append(-128)
            continue
        e = y / mp.mpf(float(oq.scale)) + oq.zero_point
        frac = e - mp.floor(e)
        if abs(frac - mp.mpf("0.5")) < mp.mpf("1e-9"):
            out.append(None)
            continue
        out.append(int(_clip(int(mp.nint(e)), -128, 127)))
    return out


@pytest.mark.parametrize("op, attrs", [(op, a) for op, (_, a) in EXACT.items()] + EXTRA)
@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.floats(-4.0, -0.5), st.floats(0.02, 6.0), st.integers(-128, 127))
def test_every_entry_is_correctly_rounded(op, attrs, lo, width, zp_out):
    iq = activation_qparams(lo, lo + width)
    # an output range around the function's values on the input range, so the table is not all clamped
    xs = np.linspace(lo, lo + width, 50)
    ys = [float(EXACT[op][0](mp.mpf(float(v)), **attrs) or 0) for v in xs if v != 0]
    ys = [v for v in ys if math.isfinite(v) and abs(v) < 1e6]
    span = max(max(ys) - min(ys), 1e-3)
    oq = QParams(span / 200.0, zp_out)
    g, region = _region(op, attrs)
    table, undefined = build_lut(region, g, iq, oq)
    want = _expected(op, attrs, iq, oq)
    bad = [(q - 128, int(t), w) for q, (t, w) in enumerate(zip(table, want)) if w is not None and int(t) != w]
    assert not bad, f"{op}{attrs}: (input, table, correctly rounded) {bad[:5]}"
    assert table.dtype == np.int8 and table.shape == (256,)
    if op in ("sqrt",):
        assert undefined == int(np.sum(np.arange(-128, 128) < iq.zero_point))


def _float_graph(ops):
    """x (1, 3, 5, 5) -> conv2d -> ops (list of (op, inputs as indices into the values so far or floats, attrs))."""
    rng = np.random.default_rng(0)
    g = Graph()
    g.add_tensor("x", (1, 3, 5, 5))
    g.add_const("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    g.add_node("conv2d", "conv", ["x", "w"], ["v0"], pads=(1, 1, 1, 1))
    vals = ["v0"]
    for i, (op, args, attrs) in enumerate(ops):
        ins = []
        for a in args:
            if isinstance(a, int):
                ins.append(vals[a])
            else:
                ins.append(g.add_const(f"k{i}_{len(ins)}", np.float32(a)))
        g.add_node(op, f"n{i}", ins, [f"v{i + 1}"], **attrs)
        vals.append(f"v{i + 1}")
    g.inputs, g.outputs = ["x"], [vals[-1]]
    return infer_shapes(g)


CALIB = np.random.default_rng(1).standard_normal((16, 3, 5, 5)).astype(np.float32)


@pytest.mark.parametrize("op, fixed", [("sigmoid", (1 / 256, -128)), ("hardsigmoid", (1 / 256, -128)),
                                       ("tanh", (1 / 128, 0)), ("hardswish", None), ("silu", None)])
def test_output_quantization_fixed_where_tflite_fixes_it(op, fixed):
    q = quantize(_float_graph([(op, [0], {})]), CALIB)
    lut = [n for n in q.nodes if n.op == "lut_s8"]
    assert len(lut) == 1
    oq = q.tensors[lut[0].outputs[0]].quant
    if fixed:
        assert (oq.scale, oq.zero_point) == fixed and lut[0].attrs["output_quant"].startswith("fixed")
    else:
        assert lut[0].attrs["output_quant"] == "calibrated (min-max)"
    assert lut[0].attrs["function"] == f"{op}(x)"


@pytest.mark.parametrize("chain, op", [
    ([("sigmoid", [0], {}), ("mul", [0, 1], {})], "silu"),
    ([("mul", [0, 1 / math.sqrt(2)], {}), ("erf", [1], {}), ("add", [2, 1.0], {}), ("mul", [0, 3], {}),
      ("mul", [4, 0.5], {})], "gelu"),
    ([("add", [0, 3.0], {}), ("clip", [1], {"min": 0.0, "max": 6.0}), ("mul", [0, 2], {}), ("mul", [3, 1 / 6], {})],
     "hardswish"),
])
def test_a_chain_of_elementwise_ops_is_one_table(chain, op):
    """The decompositions exporters emit compute the same function: one table, equal to the function's own."""
    g = _float_graph(chain)
    regions = pointwise_regions(g)
    assert len(regions) == 1 and len(next(iter(regions.values())).nodes) == len(chain)
    q = quantize(g, CALIB)
    assert [n.op for n in q.nodes] == ["conv2d_s8", "lut_s8"]
    direct = quantize(_float_graph([(op, [0], {})]), CALIB)
    t_chain = q.tensors[q.nodes[1].inputs[1]].data.astype(int)
    t_direct = direct.tensors[direct.nodes[1].inputs[1]].data.astype(int)
    # same input scale; output scales from calibration of (float32) equal functions: tables agree to rounding
    assert q.tensors["v0"].quant.scale == direct.tensors["v0"].quant.scale
    assert np.abs(t_chain - t_direct).max() <= 1


def test_relu_after_conv_is_fused_and_clamps_stay_clamps():
    q = quantize(_float_graph([("relu", [0], {}), ("sigmoid", [1], {}), ("relu", [2], {})]), CALIB)
    # conv + relu fused; sigmoid -> relu is one table (the relu joins the sigmoid's region)
    assert [n.op for n in q.nodes] == ["conv2d_s8", "lut_s8"]
    assert q.nodes[0].attrs["fused_activation"] == "relu"
    q = quantize(_float_graph([("sigmoid", [0], {}), ("tanh", [0], {}), ("add", [1, 2], {})]), CALIB)
    # sigmoid(x) + tanh(x) is a function of x: one table
    assert [n.op for n in q.nodes] == ["conv2d_s8", "lut_s8"]
    assert q.nodes[1].attrs["function"] == "add(sigmoid(x), tanh(x))"
    q = quantize(_float_graph([("sigmoid", [0], {}), ("tanh", [0], {}), ("add", [1, 2], {}),
                               ("concat", [1, 3], {"axis": 1})]), CALIB)
    # ... but not when the sigmoid is also read by a non-element-wise op: each op is then its own table or op
    assert [n.op for n in q.nodes] == ["conv2d_s8", "lut_s8", "lut_s8", "add_s8", "concat_s8"]


def test_prelu_then_relu_is_a_prelu_and_a_clamp():
    """prelu_s8 has no output clamp: a ReLU after it stays a clamp (not fused, not lost)."""
    from edgepack.reference.executor import run_int

    g = _float_graph([])
    g.add_const("slope", np.linspace(-0.5, 0.5, 4).astype(np.float32))
    g.add_node("prelu", "pr", ["v0", "slope"], ["p"])
    g.add_node("relu", "re", ["p"], ["y"])
    g.outputs = ["y"]
    q = quantize(infer_shapes(g), CALIB)
    assert [n.op for n in q.nodes] == ["conv2d_s8", "prelu_s8", "clamp_s8"]
    xq = np.random.default_rng(2).integers(-128, 128, (2, 5, 5, 3)).astype(np.int8)
    assert run_int(q, xq).shape == (2, 5, 5, 4)
