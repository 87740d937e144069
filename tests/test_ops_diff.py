"""Differential tests: for each integer op, random shapes and attributes (hypothesis), the TVM-generated C
run on the host through cffi equals the numpy reference on every output element."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import opgen
from edgepack.boards import get_board
from edgepack.build import emit
from edgepack.runners import Model, host, reference

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check(case, tmp_path_factory, n=4):
    g, seed = case
    folder = tmp_path_factory.mktemp("op")
    emit(g, get_board("host"), folder, "pytest tests/test_ops_diff.py")
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


@settings(SETTINGS, max_examples=14)
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
SETTINGS_B = settings(SETTINGS, max_examples=12)


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
