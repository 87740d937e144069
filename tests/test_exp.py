"""Exponent-coded weights: --weights expN (tuned base, integer codebook) and pow2-N (powers of two). Storage
round trips (codes, and codes through a codebook), the int32 accumulator proof of both, builds that are
bit-exact on host and boards, the codebook's realised levels, exp4 firmware smaller than int8's on a model
with more than 16 KB of weights (kernel code within 1.5 KB of int8's per layer), mixed precision, card and
report fields."""

import json
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepack.build import build
from edgepack.compress.quantize import CODEBOOK_P_MAX, _exp_layer, _pow2_layer
from edgepack.errors import EdgepackError
from edgepack.graph import Node
from edgepack.pack import expcodes
from edgepack.runners import run
from toolchains import require_board_tools


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.integers(1, 70), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits, o, k, seed):
    codes = np.random.default_rng(seed).integers(0, 1 << bits, (o, k)).astype(np.uint8)
    packed = expcodes.pack(codes, bits)
    assert packed.shape == (o, (k * bits + 7) // 8)
    assert np.array_equal(expcodes.unpack(packed, bits, codes.shape), codes)
    if bits == 4 and k >= 2:  # two per byte, low nibble first
        assert packed[0, 0] == codes[0, 0] | (codes[0, 1] << 4)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.integers(1, 40), st.booleans(), st.integers(0, 2**32 - 1))
def test_codebook_pack_unpack_round_trip(bits, o, k, per_channel, seed):
    """Integer weights on a codebook's levels -> codes (nearest_codes) -> pack -> unpack -> decode through the
    codebook: the same integers; the codes are those of the first m of each level (repeats map to one)."""
    from edgepack.compress.expdisc import nearest_codes

    rng = np.random.default_rng(seed)
    nl = 1 << (bits - 1)
    rows = o if per_channel else 1
    cb = np.zeros((rows, nl), np.int64)
    cb[:, 1:] = np.round(rng.uniform(0.2, 0.99, (rows, 1)) ** np.arange(nl - 1) * 2.0 ** rng.integers(0, 15))
    if rng.random() < 0.3:
        cb[:, 1:] = rng.integers(0, 2**14 + 1, (rows, nl - 1))
    m = rng.integers(0, nl, (o, k))
    sign = np.where(rng.random((o, k)) < 0.5, -1, 1)
    w_int = sign * cb[np.arange(o)[:, None] if per_channel else 0, m]
    codes = nearest_codes(w_int, cb, bits)
    packed = expcodes.pack(codes, bits)
    back = expcodes.unpack(packed, bits, codes.shape)
    assert np.array_equal(back, codes)
    assert np.array_equal(expcodes.decode_codebook(back, bits, cb.astype(np.int16)), w_int)
    with pytest.raises(ValueError, match="codebook shape"):
        expcodes.decode_codebook(back, bits, np.zeros((rows, nl + 1), np.int16))


def test_decode_is_sign_times_power_of_two():
    # bits 3: m = 0 zero, m = 1..3 -> 2^(top - (m-1)); top bit = sign
    codes = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    assert expcodes.decode(codes, 3, top=2).tolist() == [0, 4, 2, 1, 0, -4, -2, -1]
    cb = np.array([[0, 100, 70, 49]])
    assert expcodes.decode_codebook(codes[None], 3, cb).tolist() == [[0, 100, 70, 49, 0, -100, -70, -49]]


def test_accumulator_bound_shrinks_the_window_and_refuses_with_numbers():
    rng = np.random.default_rng(0)
    # weights spread over 30 octaves, K = 576: all 31 exponent levels of pow2-6 would not fit int32
    w = np.where(rng.random((8, 3, 3, 64)) < 0.5, -1, 1) * 2.0 ** -rng.uniform(0, 30, (8, 3, 3, 64))
    node = Node("conv2d", "big", [], [])
    codes, bias, mult, shift, top, scale, levels = _pow2_layer(node, w, np.zeros(8), 0.05, 0.1, 6, True)
    assert levels < 31
    w_int = expcodes.decode(expcodes.unpack(codes, 6, w.shape), 6, top)
    assert expcodes.accumulator_bound(w_int, bias) < 2**31
    with pytest.raises(EdgepackError, match=r"big.*overflow.*2\^31.*K = 576"):
        _pow2_layer(node, w, np.full(8, 1e12), 1e-6, 0.1, 4, True)


@pytest.mark.parametrize("per_channel", [True, False])
def test_codebook_shift_is_the_largest_the_bound_allows(per_channel):
    """exp codebooks: C_m = round(q^(m-1) 2^P) with the largest P <= 14 whose accumulator bound holds; the
    weights sit on the realised levels s C_m / 2^P (nearest), the multiplier carries s_in s 2^-P / s_out."""
    from edgepack.compress.expdisc import nearest_codes
    from edgepack.reference.arith import quantize_multiplier

    rng = np.random.default_rng(1)
    node = Node("conv2d", "wide", [], [])
    # K = 2400 weights near the top level: 255 * 2400 * 2^14 / 2 > 2^31, so P < 14
    w = np.where(rng.random((6, 5, 5, 96)) < 0.5, -1, 1) * rng.uniform(0.5, 1.0, (6, 5, 5, 96)) * 0.05
    b = rng.standard_normal(6) * 0.1
    codes, cb, bias, mult, shift, scale, base, p = _exp_layer(node, w, b, 0.02, 0.05, 5, per_channel)
    assert cb.dtype == np.int16 and cb.shape == ((6 if per_channel else 1), 16) and np.all(cb[:, 0] == 0)
    assert p < CODEBOOK_P_MAX and np.array_equal(cb[:, 1:], np.round(base[:cb.shape[0], None] ** np.arange(15)
                                                                       * 2.0 ** p))
    w_int = expcodes.decode_codebook(expcodes.unpack(codes, 5, w.shape), 5, cb)
    assert expcodes.accumulator_bound(w_int, bias) < 2**31
    cb1 = np.zeros_like(cb, np.int64)
    cb1[:, 1:] = np.round(base[:cb.shape[0], None] ** np.arange(15) * 2.0 ** (p + 1))
    c1 = nearest_codes(w, scale[:cb.shape[0], None] * cb1 / 2.0 ** (p + 1), 5)
    b1 = np.round(b / (0.02 * scale / 2.0 ** (p + 1)))
    assert expcodes.accumulator_bound(expcodes.decode_codebook(c1, 5, cb1), b1) >= 2**31  # P + 1 would overflow
    levels = scale[:cb.shape[0], None] * cb / 2.0 ** p
    assert np.array_equal(expcodes.unpack(codes, 5, w.shape), nearest_codes(w, levels, 5))
    assert [(int(m), int(s)) for m, s in zip(mult, shift)] == \
        [quantize_multiplier(float(0.02 * s_ / 2.0 ** p / 0.05)) for s_ in scale]
    with pytest.raises(EdgepackError, match=r"wide.*overflow.*2\^31.*K = 2400"):
        _exp_layer(node, w, np.full(6, 1e12), 1e-6, 0.1, 4, per_channel)


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


@pytest.mark.parametrize("weights", ["exp2", "exp3", "exp4", "exp8", "pow2-4"])
def test_expn_build_is_bit_exact_on_the_host(net, weights):
    d, p, x = net
    out = d / weights
    r = build(p, "host", out, calib=d / "calib.npy", weights=weights)
    fmts = [l["weight_format"].split()[0] for l in r["layers"] if l["weight_format"]]
    assert fmts == ["int8"] + [weights] * 4 + ["int8"]  # first and last stay int8
    suffix = "_exp" if weights.startswith("pow2") else "_expcb"
    assert {l["op"] for l in r["layers"]} >= {"conv2d" + suffix, "dwconv2d" + suffix, "dense" + suffix}
    assert np.array_equal(run(out, x, on="host")[1], run(out, x, on="reference")[1])
    card = json.loads((out / "quantization_card.json").read_text())
    rows = [l for l in card["layers"] if l.get("weight_format", "").startswith(weights)]
    assert len(rows) == 4
    bits = int(weights[-1])
    for row in rows:
        assert row["codebook_size"] == (1 << (bits - 1)) - 1
        if weights.startswith("pow2"):
            assert row["base"] == 0.5 and "power-of-two exponent codes" in row["weight_format"]
        else:
            assert "exponential codebook, base q" in row["weight_format"]
            if row["codebook_granularity"] == "per channel":  # codebook rows pay for themselves (fc1)
                assert 0 < row["base"]["min"] <= row["base"]["max"] < 1 and row["name"] == "linear"
            else:  # small layers: one base and codebook row for the layer, the scales per channel
                assert row["codebook_granularity"] == "base per layer, scale per channel" and 0 < row["base"] < 1
    md = (out / "quantization_card.md").read_text()
    assert "Exponent codes (base, codebook size, granularity)" in md
    rep = (out / "report.md").read_text()
    assert "kernel code bytes" in rep


def test_mixed_precision_override(net):
    d, p, x = net
    r = build(p, "host", d / "mixed", calib=d / "calib.npy", weights="exp4",
              layer_weights={"conv2d_1": "int8", "linear_1": "exp6"})
    fmts = {l["name"]: l["weight_format"].split()[0] for l in r["layers"] if l["weight_format"]}
    assert fmts["conv2d_1"] == "int8" and fmts["linear_1"] == "exp6" and fmts["conv2d_2"] == "exp4"
    with pytest.raises(EdgepackError, match="nosuch"):
        build(p, "host", d / "bad", calib=d / "calib.npy", weights="exp4", layer_weights={"nosuch": "int8"})


def _berkeley_flash(folder, board) -> int:
    """text + data of firmware.elf, from the board toolchain's size (Berkeley format)."""
    out = subprocess.run([board["toolchain_prefix"] + "size", str(folder / "firmware.elf")], capture_output=True,
                         text=True, check=True).stdout.splitlines()[1].split()
    return int(out[0]) + int(out[1])


@pytest.mark.parametrize("board", ["cortex-m7", "rpi4"])
def test_exp4_on_boards_smaller_firmware_than_int8(net, board):
    """exp4 on the boards equals the reference; on cortex-m7 (a model with 18 KB of int8 weights) the exp4
    firmware is smaller than the int8 one (text + data of firmware.elf), its weights take half the bytes (plus
    the 16 B codebook row per channel), and every exp4 kernel's code is within 1.5 KB of the int8 kernel's."""
    b = require_board_tools(board)
    d, p, x = net
    r4 = build(p, board, d / f"{board}-exp4", calib=d / "calib.npy", weights="exp4")
    assert np.array_equal(run(d / f"{board}-exp4", x, on="emulator")[1], run(d / f"{board}-exp4", x,
                                                                                on="reference")[1])
    if board != "cortex-m7":
        return
    r8 = build(p, board, d / f"{board}-int8", calib=d / "calib.npy")
    assert r8["weights_bytes"] > 16 * 1024
    assert _berkeley_flash(d / f"{board}-exp4", b) < _berkeley_flash(d / f"{board}-int8", b)
    assert r4["flash_bytes"] < r8["flash_bytes"]
    md = (d / f"{board}-exp4" / "report.md").read_text()
    card4 = {l["name"]: l for l in json.loads((d / f"{board}-exp4" / "quantization_card.json").read_text())["layers"]}
    for l4, l8 in zip(r4["layers"], r8["layers"]):
        assert l4["kernel_code_bytes"] > 0 and l8["kernel_code_bytes"] > 0
        assert f"| {l4['weight_bytes']} | {l4['kernel_code_bytes']} |" in md  # beside the weight bytes
        if l4["weight_format"] and l4["weight_format"].startswith("exp4"):
            assert l4["kernel_code_bytes"] <= l8["kernel_code_bytes"] + 1536, (l4["name"], l4["kernel_code_bytes"])
            ws = l8["weight_shape"]
            o, k = (ws[-1], ws[0] * ws[1]) if l8["op"] == "dwconv2d_s8" else (ws[0], int(np.prod(ws[1:])))
            rows = o if card4[l4["name"]]["codebook_granularity"] == "per channel" else 1
            assert l4["weight_bytes_in_elf"] == o * ((k * 4 + 7) // 8) + rows * 8 * 2  # codes + int16 codebook
            assert l8["weight_bytes_in_elf"] == o * k
            assert l4["weight_bytes_in_elf"] * 2 <= l8["weight_bytes_in_elf"] + 33 * o


def test_per_layer_scale_option(net):
    d, p, x = net
    r = build(p, "host", d / "perlayer", calib=d / "calib.npy", weights="exp3", per_channel=False)
    assert r["quantization"]["weight_scale"] == "per-layer"
    assert np.array_equal(run(d / "perlayer", x, on="host")[1], run(d / "perlayer", x, on="reference")[1])
    card = json.loads((d / "perlayer" / "quantization_card.json").read_text())
    rows = [l for l in card["layers"] if l.get("weight_format", "").startswith("exp3")]
    assert rows and all(r["codebook_granularity"] == "per layer" and 0 < r["base"] < 1 for r in rows)
