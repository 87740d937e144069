"""Differential tests on the boards: for every operator (the codebook ops of --weights expN too: fewer examples,
their arithmetic is the int8 one after a table decode), random shapes (hypothesis), the raw outputs of the
firmware on the emulated Cortex-M7 and Cortex-M33 (QEMU system mode) and of the static binaries on the
Raspberry Pi boards (qemu-aarch64, qemu-arm) equal the numpy reference, every element.

Boards with the DSP feature (cortex-m7, cortex-m33, rpi-armhf; cortex-m4 below) run the DSP schedules of
conv2d_s8, dwconv2d_s8 and dense_s8 on the real instructions; "rpi4+dsp" builds those schedules for the
aarch64 board (no DSP extension: the portable C of ep_dsp.h)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import opgen
from edgepack.build import emit
from edgepack.runners import Model, emulator, host, reference
from toolchains import require_board_tools

CASES = {
    "conv2d_s8": opgen.conv_case(),
    "dwconv2d_s8": opgen.conv_case(depthwise=True),
    "dense_s8": opgen.dense_case(),
    "maxpool_s8": opgen.pool_case("maxpool_s8"),
    "avgpool_s8": opgen.pool_case("avgpool_s8"),
    "avgpool_s8_c4": opgen.pool_case("avgpool_s8", channels=(4, 8, 32)),  # the DSP boards' SXTAB16 kernel
    "add_s8": opgen.add_case(),
    "clamp_s8": opgen.clamp_case(),
    "softmax_s8": opgen.softmax_case(),
    "bconv2d_b1": opgen.binary_case(out_bits=True),
    "bconv2d_b1_s8": opgen.binary_case(out_bits=False),
    "conv2d_s8_csr": opgen.sparse_case("conv2d_s8_csr"),
    "dense_s8_csr": opgen.sparse_case("dense_s8_csr"),
    "conv2d_s8_bitmask": opgen.sparse_case("conv2d_s8_bitmask"),
    "dense_s8_bitmask": opgen.sparse_case("dense_s8_bitmask"),
    "conv2d_expcb": opgen.expcb_case("conv2d_expcb"),  # --weights expN: tuned bases, random codebooks
    "dwconv2d_expcb": opgen.expcb_case("dwconv2d_expcb"),
    "dense_expcb": opgen.expcb_case("dense_expcb"),
}
BOARDS = {"cortex-m7": 5, "cortex-m33": 3, "rpi4": 3, "rpi-armhf": 3}
CHAIN_BOARDS = {"cortex-m7": 4, "rpi4": 3}
SCHEDULED_OPS = ("conv2d_s8", "dwconv2d_s8", "dense_s8", "avgpool_s8_c4")  # kernels of the DSP schedule table
DSP_BOARDS = {"cortex-m4": 2, "rpi4+dsp": 2}  # the scheduled kernels only, on two more targets


@pytest.mark.parametrize("board,op", [(b, op) for b in BOARDS for op in CASES if (b, op) != ("rpi4", "avgpool_s8_c4")]
                         + [(b, op) for b in DSP_BOARDS for op in SCHEDULED_OPS])
def test_board_equals_reference(board, op, tmp_path_factory):
    name, _, forced = board.partition("+")
    b = require_board_tools(name)
    if forced:
        b = dict(b, features=[forced])

    # the sparse-weight ops are the int8 arithmetic with another weight walk: fewer examples per board
    n = DSP_BOARDS[board] if board in DSP_BOARDS else \
        min(BOARDS[board], 3) if op.endswith(("_csr", "_bitmask", "_c4")) else \
        (3 if board == "cortex-m7" else 2) if op.endswith("_expcb") else BOARDS[board]
    _check_on_board(board, b, op, CASES[op], n, tmp_path_factory, host_too=True)


@pytest.mark.parametrize("board", list(CHAIN_BOARDS))
def test_chain_of_elementwise_and_concat_ops(board, tmp_path_factory):
    """lut, mul (squeeze-excite), add / sub of a constant, prelu, concat (in place, strided, requantized), slice
    (view or copy) and pad in one graph per example: each of these kernels on the board."""
    _check_on_board(board, require_board_tools(board), "chain", opgen.chain_case(), CHAIN_BOARDS[board],
                    tmp_path_factory, host_too=True)


def _check_on_board(board, b, op, cases, n, tmp_path_factory, host_too):
    """``n`` hypothesis cases of ``op``: the board's raw outputs (and the host's) equal the reference."""

    @settings(max_examples=n, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(cases)
    def check(case):
        g, seed = case
        folder = tmp_path_factory.mktemp(f"{board}-{op}")
        facts, _, _ = emit(g, b, folder, "pytest tests/test_boards_diff.py")
        if op in SCHEDULED_OPS and "dsp" in b.get("features", []) and g.nodes[-1].op != "add_s8":
            assert facts["layers"][-1]["schedule"] == "dsp", facts["layers"]
        m = Model(folder)
        rng = np.random.default_rng(seed)
        x = rng.integers(-128, 128, (3,) + tuple(g.tensors[g.inputs[0]].shape[1:])).astype(np.int8)
        want = reference.run_raw(m, x)
        got = emulator.run_raw(m, x, timeout=120)
        assert np.array_equal(got, want), f"{board}: {(got != want).sum()} of {want.size} differ\n{g}"
        if host_too:
            assert np.array_equal(host.run_raw(m, x), want)

    check()


# ---- issue 14 part B: on the Cortex-M7 emulator and the Raspberry Pi 4 (qemu-aarch64) -------------------
CASES_B = {
    "conv2d_s8_grouped": opgen.conv_case(grouped=True),
    "maxpool_s8_dilated": opgen.pool_case("maxpool_s8", dilated=True),
    "transpose_s8": opgen.transpose_case(),
    "resize_nearest_s8": opgen.resize_case("nearest"),
    "resize_bilinear_s8": opgen.resize_case("bilinear"),
    "conv_transpose2d_s8": opgen.conv_transpose_case(),
    "lstm_s8": opgen.rnn_case("lstm"),
    "gru_s8": opgen.rnn_case("gru"),
}


@pytest.mark.parametrize("board", ["cortex-m7", "rpi4"])
@pytest.mark.parametrize("op", list(CASES_B))
def test_board_equals_reference_b(board, op, tmp_path_factory):
    _check_on_board(board, require_board_tools(board), op, CASES_B[op], 2, tmp_path_factory, host_too=False)
