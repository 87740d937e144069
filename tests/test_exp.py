"""Exponent-coded weights (--weights expN): storage round trip, the int32 accumulator proof, builds that are
bit-exact on host and boards, exp4 taking half the int8 weight bytes in the ELF, mixed precision."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepack.build import build
from edgepack.compress.quantize import _exp_layer
from edgepack.errors import EdgepackError
from edgepack.graph import Node
from edgepack.pack import expcodes
from edgepack.runners import run
from toolchains import require_board_tools


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6), st.integers(1, 5), st.integers(1, 70), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits, o, k, seed):
    codes = np.random.default_rng(seed).integers(0, 1 << bits, (o, k)).astype(np.uint8)
    packed = expcodes.pack(codes, bits)
    assert packed.shape == (o, (k * bits + 7) // 8)
    assert np.array_equal(expcodes.unpack(packed, bits, codes.shape), codes)
    if bits == 4 and k >= 2:  # two per byte, low nibble first
        assert packed[0, 0] == codes[0, 0] | (codes[0, 1] << 4)


def test_decode_is_sign_times_power_of_two():
    # bits 3: m = 0 zero, m = 1..3 -> 2^(top - (m-1)); top bit = sign
    codes = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    assert expcodes.decode(codes, 3, top=2).tolist() == [0, 4, 2, 1, 0, -4, -2, -1]


def test_accumulator_bound_shrinks_the_window_and_refuses_with_numbers():
    rng = np.random.default_rng(0)
    # weights spread over 30 octaves, K = 576: all 31 exponent levels of exp6 would not fit int32
    w = np.where(rng.random((8, 3, 3, 64)) < 0.5, -1, 1) * 2.0 ** -rng.uniform(0, 30, (8, 3, 3, 64))
    node = Node("conv2d", "big", [], [])
    codes, bias, mult, shift, top, scale, levels = _exp_layer(node, w, np.zeros(8), 0.05, 0.1, 6, True)
    assert levels < 31
    w_int = expcodes.decode(expcodes.unpack(codes, 6, w.shape), 6, top)
    assert expcodes.accumulator_bound(w_int, bias) < 2**31
    with pytest.raises(EdgepackError, match=r"big.*overflow.*2\^31.*K = 576"):
        _exp_layer(node, w, np.full(8, 1e12), 1e-6, 0.1, 4, True)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c0 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.c1 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c2 = torch.nn.Conv2d(16, 16, 1)
        self.fc1 = torch.nn.Linear(16 * 6 * 6, 32)
        self.fc = torch.nn.Linear(32, 10)
        self.eval()

    def forward(self, x):
        x = torch.relu(self.c0(x))
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(torch.relu(self.dw(x))))
        return self.fc(torch.relu(self.fc1(x.flatten(1))))


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("exp")
    p = d / "net.pt2"
    torch.export.save(torch.export.export(Net(), (torch.zeros(1, 1, 12, 12),)), p)
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.standard_normal((32, 1, 12, 12)).astype(np.float32))
    return d, p, rng.standard_normal((5, 1, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_expn_build_is_bit_exact_on_the_host(net, bits):
    d, p, x = net
    out = d / f"exp{bits}"
    r = build(p, "host", out, calib=d / "calib.npy", weights=f"exp{bits}")
    fmts = [l["weight_format"].split()[0] for l in r["layers"] if l["weight_format"]]
    assert fmts == ["int8"] + [f"exp{bits}"] * 4 + ["int8"]  # first and last stay int8
    assert {l["op"] for l in r["layers"]} >= {"conv2d_exp", "dwconv2d_exp", "dense_exp"}
    assert np.array_equal(run(out, x, on="host")[1], run(out, x, on="reference")[1])


def test_mixed_precision_override(net):
    d, p, x = net
    r = build(p, "host", d / "mixed", calib=d / "calib.npy", weights="exp4",
              layer_weights={"conv2d_1": "int8", "linear_1": "exp6"})
    fmts = {l["name"]: l["weight_format"].split()[0] for l in r["layers"] if l["weight_format"]}
    assert fmts["conv2d_1"] == "int8" and fmts["linear_1"] == "exp6" and fmts["conv2d_2"] == "exp4"
    with pytest.raises(EdgepackError, match="nosuch"):
        build(p, "host", d / "bad", calib=d / "calib.npy", weights="exp4", layer_weights={"nosuch": "int8"})


@pytest.mark.parametrize("board", ["cortex-m7", "rpi4"])
def test_exp4_on_boards_and_half_the_bytes_in_the_elf(net, board):
    require_board_tools(board)
    d, p, x = net
    r4 = build(p, board, d / f"{board}-exp4", calib=d / "calib.npy", weights="exp4")
    assert np.array_equal(run(d / f"{board}-exp4", x, on="emulator")[1], run(d / f"{board}-exp4", x,
                                                                                on="reference")[1])
    if board != "cortex-m7":
        return
    r8 = build(p, board, d / f"{board}-int8", calib=d / "calib.npy")
    for l4, l8 in zip(r4["layers"], r8["layers"]):
        if l4["weight_format"] and l4["weight_format"].startswith("exp4"):
            ws = l8["weight_shape"]
            o, k = (ws[-1], ws[0] * ws[1]) if l8["op"] == "dwconv2d_s8" else (ws[0], int(np.prod(ws[1:])))
            assert l4["weight_bytes_in_elf"] == o * ((k * 4 + 7) // 8)  # measured from the ELF's symbol
            assert l8["weight_bytes_in_elf"] == o * k
            assert l4["weight_bytes_in_elf"] * 2 <= l8["weight_bytes_in_elf"] + o


def test_per_layer_scale_option(net):
    d, p, x = net
    r = build(p, "host", d / "perlayer", calib=d / "calib.npy", weights="exp3", per_channel=False)
    assert r["quantization"]["weight_scale"] == "per-layer"
    assert np.array_equal(run(d / "perlayer", x, on="host")[1], run(d / "perlayer", x, on="reference")[1])
