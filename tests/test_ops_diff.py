"""Differential tests: for each integer op, random shapes and attributes (hypothesis), the TVM-generated C
run on the host through cffi equals the numpy reference on every output element."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import opgen
from edgepack.boards import get_board
from edgepack.build import emit
from edgepack.runners import Model, host, reference

SETTINGS = settings(max_examples=16, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# the host build with the DSP features of the Cortex-M boards: the DSP schedules' kernels, through the
# portable C definitions of firmware/runtime/ep_dsp.h (tests/test_dsp_intrin.py checks them against the Arm
# semantics; tests/test_boards_diff.py runs the same kernels on the real instructions)
DSP_HOST = dict(get_board("host"), features=["dsp"])


def check(case, tmp_path_factory, n=4, board=None, schedule="plain"):
    g, seed = case
    folder = tmp_path_factory.mktemp("op")
    facts, _, _ = emit(g, board or get_board("host"), folder, "pytest tests/test_ops_diff.py")
    assert [l["schedule"] for l in facts["layers"]] == [schedule] * len(facts["layers"]), facts["layers"]
    m = Model(folder)
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n,) + tuple(g.tensors[g.inputs[0]].shape[1:])).astype(np.int8)
    x[0] = -128  # extremes
    x[1] = 127
    want = reference.run_raw(m, x)
    got = host.run_raw(m, x)
    assert got.shape == want.shape
    bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
    assert bad.size == 0, f"{bad.size} of {want.size} elements differ; first at {bad[:5]}: " \
                          f"host {got.reshape(-1)[bad[:5]]} reference {want.reshape(-1)[bad[:5]]}\n{g}"
    return want


@SETTINGS
@given(opgen.conv_case())
def test_conv2d_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS
@given(opgen.conv_case(depthwise=True))
def test_dwconv2d_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS
@given(opgen.dense_case())
def test_dense_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@settings(SETTINGS, max_examples=10)
@given(opgen.conv_case())
def test_conv2d_s8_smlad_schedule(tmp_path_factory, case):
    check(case, tmp_path_factory, board=DSP_HOST, schedule="dsp")


@settings(SETTINGS, max_examples=10)
@given(opgen.conv_case(depthwise=True))
def test_dwconv2d_s8_fold_schedule(tmp_path_factory, case):
    check(case, tmp_path_factory, board=DSP_HOST, schedule="dsp")


@settings(SETTINGS, max_examples=10)
@given(opgen.dense_case())
def test_dense_s8_smlad_schedule(tmp_path_factory, case):
    check(case, tmp_path_factory, board=DSP_HOST, schedule="dsp")


@settings(SETTINGS, max_examples=10)
@given(opgen.pool_case("avgpool_s8", channels=(4, 8, 12, 32)))
def test_avgpool_s8_sxtab16_schedule(tmp_path_factory, case):
    check(case, tmp_path_factory, board=DSP_HOST, schedule="dsp")


@SETTINGS
@given(opgen.pool_case("maxpool_s8"))
def test_maxpool_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS
@given(opgen.pool_case("avgpool_s8"))
def test_avgpool_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS
@given(opgen.add_case())
def test_add_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


FEW = settings(SETTINGS, max_examples=10)


@settings(SETTINGS, max_examples=6)
@given(opgen.add_case(nary=True))
def test_add_s8_nary(tmp_path_factory, case):
    check(case, tmp_path_factory)


@FEW
@given(opgen.mul_case())
def test_mul_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@settings(SETTINGS, max_examples=5)
@given(opgen.lut_case())
def test_lut_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@FEW
@given(opgen.prelu_case())
def test_prelu_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@FEW
@given(opgen.pad_case())
def test_pad_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@settings(SETTINGS, max_examples=10)
@given(opgen.concat_case())
def test_concat_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@settings(SETTINGS, max_examples=10)
@given(opgen.slice_case())
def test_slice_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@settings(SETTINGS, max_examples=5)
@given(opgen.clamp_case())
def test_clamp_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS
@given(opgen.softmax_case())
def test_softmax_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS
@given(opgen.binary_case(out_bits=True))
def test_bconv2d_b1(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS
@given(opgen.binary_case(out_bits=False))
def test_bconv2d_b1_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


# ---- issue 14 part B: grouped convolution, dilated max pooling, transpose, resize, transposed convolution ---
SETTINGS_B = settings(SETTINGS, max_examples=10)


@SETTINGS_B
@given(opgen.conv_case(grouped=True))
def test_conv2d_s8_grouped(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS_B
@given(opgen.pool_case("maxpool_s8", dilated=True))
def test_maxpool_s8_dilated(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS_B
@given(opgen.transpose_case())
def test_transpose_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS_B
@given(opgen.resize_case("nearest"))
def test_resize_nearest_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS_B
@given(opgen.resize_case("bilinear"))
def test_resize_bilinear_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS_B
@given(opgen.conv_transpose_case())
def test_conv_transpose2d_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@settings(SETTINGS, max_examples=6)  # each example is an unrolled sequence: fewer, larger cases
@given(opgen.rnn_case("lstm"))
def test_lstm_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


@settings(SETTINGS, max_examples=6)
@given(opgen.rnn_case("gru"))
def test_gru_s8(tmp_path_factory, case):
    check(case, tmp_path_factory)


def _avgpool_graph(x_shape, zp, **attrs):
    from edgepack.graph import Graph, QParams
    g = Graph()
    q = QParams(0.05, zp)
    g.add_tensor("x", x_shape, "int8", quant=q)
    oh = (x_shape[1] + attrs["pads"][0] + attrs["pads"][2] - attrs["kernel"][0]) // attrs["strides"][0] + 1
    ow = (x_shape[2] + attrs["pads"][1] + attrs["pads"][3] - attrs["kernel"][1]) // attrs["strides"][1] + 1
    g.add_tensor("y", (1, oh, ow, x_shape[3]), "int8", quant=q)
    g.add_node("avgpool_s8", "pool", ["x"], ["y"], zp=zp, **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avgpool_rounds_the_raw_sum_like_tflite(tmp_path, count_include_pad):
    """Exact ties (even window counts): TFLite rounds the raw sum half away from zero, round(sum(x) / d),
    which differs by 1 from zp + round(sum(x - zp) / d) when the two sums have opposite signs."""
    from edgepack.reference.arith import round_div_away
    zp = 3
    g = _avgpool_graph((1, 2, 4, 2), zp, kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0),
                       count_include_pad=count_include_pad)
    # window sums 2, -2, 6 and 10 over 4 taps: ties +0.5, -0.5, 1.5, 2.5
    x = np.array([[[[1, -1], [1, -1], [3, 4], [3, 4]], [[0, 0], [0, 0], [0, 1], [0, 1]]]], np.int8)
    m = _emit_model(g, tmp_path)
    want = reference.run_raw(m, x)
    assert want.reshape(-1).tolist() == [1, -1, 2, 3]  # raw-sum rounding, away from zero
    old = [int(round_div_away(np.int64(s - 4 * zp), 4)) + zp for s in (2, -2, 6, 10)]
    assert old == [0, -1, 1, 2]  # the zero-point-relative rounding, off by one on three of the four ties
    assert np.array_equal(host.run_raw(m, x), want)
    # padded windows count zp for the padded taps when count_include_pad
    g = _avgpool_graph((1, 1, 3, 1), zp, kernel=(2, 2), strides=(2, 2), pads=(1, 1, 0, 0),
                       count_include_pad=count_include_pad)
    m = _emit_model(g, tmp_path / "pad")
    x = np.array([[[[5], [-4], [7]]]], np.int8)
    want = reference.run_raw(m, x).reshape(-1).tolist()
    d = 4 if count_include_pad else 1
    first = int(round_div_away(np.int64(5 + (3 * zp if count_include_pad else 0)), d))
    assert want[0] == first
    assert np.array_equal(host.run_raw(m, x), reference.run_raw(m, x))


def _emit_model(g, folder):
    folder.mkdir(parents=True, exist_ok=True)
    emit(g, get_board("host"), folder, "pytest tests/test_ops_diff.py")
    return Model(folder)


def test_scheduled_layers_of_the_same_shapes_share_a_kernel(tmp_path):
    """Two convs (and two depthwise convs) of the same shapes and different zero points, activation ranges
    and scales: one scheduled kernel each, reading the layer's qp array; outputs equal the reference."""
    from edgepack.graph import Graph, QParams
    from edgepack.reference.arith import quantize_multiplier
    rng = np.random.default_rng(5)
    g = Graph()
    zps = [-7, 5, 20, 3, 11]
    for i, zp in enumerate(zps):
        g.add_tensor(f"t{i}", (1, 6, 6, 8), "int8", quant=QParams(0.05, zp))
    ops = ["conv2d_s8", "dwconv2d_s8", "conv2d_s8", "dwconv2d_s8"]
    for i, op in enumerate(ops):
        w = rng.integers(-127, 128, (8, 3, 3, 8) if op == "conv2d_s8" else (3, 3, 8)).astype(np.int8)
        g.add_const(f"w{i}", w)
        g.add_const(f"b{i}", rng.integers(-2**12, 2**12, 8).astype(np.int32))
        ms = [quantize_multiplier(float(v)) for v in rng.uniform(1e-4, 0.02, 8)]
        g.add_const(f"m{i}", np.array([m for m, _ in ms], np.int32))
        g.add_const(f"s{i}", np.array([s for _, s in ms], np.int32))
        attrs = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), in_zp=zps[i], out_zp=zps[i + 1],
                     act_min=zps[i + 1] if i % 2 else -128, act_max=127, w_scale=[float(i)] * 8)
        if op == "dwconv2d_s8":
            attrs["depth_multiplier"] = 1
        g.add_node(op, f"l{i}", [f"t{i}", f"w{i}", f"b{i}", f"m{i}", f"s{i}"], [f"t{i + 1}"], **attrs)
    g.inputs, g.outputs = ["t0"], [f"t{len(ops)}"]
    facts, _, _ = emit(g, DSP_HOST, tmp_path, "pytest tests/test_ops_diff.py")
    kernels = [l["kernel"] for l in facts["layers"]]
    assert [l["schedule"] for l in facts["layers"]] == ["dsp"] * 4
    # the convs clamp to all of int8, the depthwise convs at their output zero point (ReLU): a pair each
    assert kernels[0] == kernels[2] and kernels[1] == kernels[3] and kernels[0] != kernels[1], kernels
    m = Model(tmp_path)
    x = rng.integers(-128, 128, (3, 6, 6, 8)).astype(np.int8)
    assert np.array_equal(host.run_raw(m, x), reference.run_raw(m, x))


def test_layers_beyond_the_proven_bounds_keep_the_plain_kernel(tmp_path_factory):
    """A bias near 2^30 leaves the 32-bit requantization unproven (|acc| < 2^29 needed): the DSP board's build
    keeps the plain kernel for that layer, says why, and still equals the reference."""
    from edgepack.graph import Graph, QParams
    from edgepack.reference.arith import quantize_multiplier
    g = Graph()
    g.add_tensor("x", (1, 4, 4, 4), "int8", quant=QParams(0.05, 1))
    g.add_tensor("y", (1, 4, 4, 2), "int8", quant=QParams(0.05, -3))
    g.add_const("w", np.full((2, 1, 1, 4), 100, np.int8))
    g.add_const("bias", np.array([3 << 28, -5], np.int32))
    m, s = quantize_multiplier(2.0**-24)
    g.add_const("mult", np.array([m, m], np.int32))
    g.add_const("shift", np.array([s, s], np.int32))
    g.add_node("conv2d_s8", "big", ["x", "w", "bias", "mult", "shift"], ["y"], strides=(1, 1), pads=(0, 0, 0, 0),
               dilations=(1, 1), in_zp=1, out_zp=-3, act_min=-128, act_max=127)
    g.inputs, g.outputs = ["x"], ["y"]
    folder = tmp_path_factory.mktemp("big")
    facts, _, _ = emit(g, DSP_HOST, folder, "pytest tests/test_ops_diff.py")
    (layer,) = facts["layers"]
    assert layer["schedule"] == "plain" and "requantization not proven" in layer["schedule_note"]
    model = Model(folder)
    x = np.random.default_rng(0).integers(-128, 128, (2, 4, 4, 4)).astype(np.int8)
    assert np.array_equal(host.run_raw(model, x), reference.run_raw(model, x))


def test_layers_differing_only_in_record_only_attrs_share_a_kernel(tmp_path):
    """Two plain convs of the same shapes, zero points, ranges and multipliers whose nodes differ only in what the
    card records (the folded batchnorm's name, the float weight scales; a model's builds from .pt2 and .onnx
    differ so) share one kernel, a third with another output zero point has its own; outputs equal the
    reference."""
    from edgepack.graph import Graph, QParams
    from edgepack.reference.arith import quantize_multiplier
    rng = np.random.default_rng(6)
    g = Graph()
    zps = [5, 5, 5, 20]
    for i, zp in enumerate(zps):
        g.add_tensor(f"t{i}", (1, 5, 7, 8), "int8", quant=QParams(0.05, zp))
    ms = [quantize_multiplier(float(v)) for v in rng.uniform(1e-4, 0.02, 8)]
    for i in range(3):
        g.add_const(f"w{i}", rng.integers(-127, 128, (8, 3, 3, 8)).astype(np.int8))
        g.add_const(f"b{i}", rng.integers(-2**12, 2**12, 8).astype(np.int32))
        g.add_const(f"m{i}", np.array([m for m, _ in ms], np.int32))
        g.add_const(f"s{i}", np.array([s for _, s in ms], np.int32))
        g.add_node("conv2d_s8", f"l{i}", [f"t{i}", f"w{i}", f"b{i}", f"m{i}", f"s{i}"], [f"t{i + 1}"],
                   strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), in_zp=zps[i], out_zp=zps[i + 1], act_min=-128, act_max=127, w_scale=[0.01 * (i + 1)] * 8,
                   folded_bn=f"batch_norm_{i}")
    g.inputs, g.outputs = ["t0"], ["t3"]
    facts, _, _ = emit(g, get_board("host"), tmp_path, "pytest tests/test_ops_diff.py")
    kernels = [l["kernel"] for l in facts["layers"]]
    assert kernels[0] == kernels[1] != kernels[2], kernels
    m = Model(tmp_path)
    x = rng.integers(-128, 128, (3, 5, 7, 8)).astype(np.int8)
    assert np.array_equal(host.run_raw(m, x), reference.run_raw(m, x))
