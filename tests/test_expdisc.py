"""Exponential discretization (compress.expdisc). The tuned base (expN): codes in range, values on the levels
+-s q^k of the chosen q and s, every weight at its nearest level, never worse than powers of two (q = 1/2 is
a candidate), one q and s per layer, b = 2 ternary, rounding to an arbitrary codebook (nearest_codes). The
power-of-two variant (pow2-N): code range and format, exact power-of-two values inside the window, the scale
search never worse than scale = max|w|, per-layer scale, linear level count, b = 2 ternary. discretize_model
keeping the first and last layers float."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepack.compress.expdisc import (discretize_model, exp_dequantize, exp_discretize, linear_discretize,
                                       nearest_codes, pow2_dequantize, pow2_discretize)
from edgepack.pack import expcodes


def weights(seed, o, k, heavy):
    rng = np.random.default_rng(seed)
    w = rng.standard_t(3, (o, k)) if heavy else rng.standard_normal((o, k))
    w *= rng.uniform(0.01, 2.0, (o, 1))  # channels of different magnitudes
    w[rng.random((o, k)) < 0.1] = 0.0
    return w


cases = st.tuples(st.integers(2, 6), st.integers(1, 6), st.integers(1, 60), st.booleans(), st.booleans(),
                  st.integers(0, 2**32 - 1))


@settings(max_examples=80, deadline=None)
@given(cases, st.data())
def test_pow2_codes_in_range_and_values_exact_powers_of_two(case, data):
    bits, o, k, per_channel, heavy, seed = case
    full = (1 << (bits - 1)) - 1
    levels = data.draw(st.one_of(st.none(), st.integers(1, full)))
    w = weights(seed, o, k, heavy)
    codes, scale = pow2_discretize(w, bits, per_channel=per_channel, max_levels=levels)
    assert codes.dtype == np.uint8 and codes.shape == w.shape
    assert scale.dtype == np.float64 and scale.shape == (o,) and np.all(scale > 0)
    assert codes.max() < (1 << bits)
    m = codes.astype(np.int64) & full
    assert m.max() <= (levels or full)
    v = pow2_dequantize(codes, scale, bits)
    n = levels or full
    allowed = scale[:, None] * 2.0 ** -np.arange(n)[None, :]  # (O, n): exactly representable levels
    mag = np.abs(v)
    ok = (mag == 0) | np.any(mag[:, :, None] == allowed[:, None, :], axis=2)
    assert ok.all()
    assert np.all((v == 0) | (np.sign(v) == np.sign(w)))  # the sign is kept, zeros are plain code 0
    assert np.all(codes[v == 0] == 0)
    # the integer kernels' view agrees: decode(top) * scale * 2^-top == dequantized value
    top = int(m.max() - 1) if m.max() > 0 else 0
    assert np.array_equal(expcodes.decode(codes, bits, top) * scale[:, None] * 2.0 ** -top, v)
    # round trip through the storage format
    assert np.array_equal(expcodes.unpack(expcodes.pack(codes, bits), bits, codes.shape), codes)


@settings(max_examples=80, deadline=None)
@given(cases)
def test_pow2_nearest_level_and_search_never_worse_than_max_scale(case):
    bits, o, k, per_channel, heavy, seed = case
    full = (1 << (bits - 1)) - 1
    w = weights(seed, o, k, heavy)
    codes, scale = pow2_discretize(w, bits, per_channel=per_channel)
    v = pow2_dequantize(codes, scale, bits)
    # each weight is at the nearest level of its scale (brute force over all levels, 0 included)
    lv = np.concatenate([np.zeros((o, 1)), scale[:, None] * 2.0 ** -np.arange(full)[None, :]], axis=1)
    best = np.abs(np.abs(w)[:, :, None] - lv[:, None, :]).min(axis=2)
    assert np.allclose(np.abs(np.abs(w) - np.abs(v)), best, rtol=1e-12, atol=1e-15)
    # the searched scale is no worse than the fixed max|w| one (per channel, or summed over the layer)
    c0, s0 = pow2_discretize(w, bits, per_channel=per_channel, search=False)
    top = np.abs(w).max(axis=1)
    expect = top if per_channel else np.full(o, top.max())
    assert np.allclose(s0[top > 0], expect[top > 0])
    e = ((w - v) ** 2).sum(axis=1)
    e0 = ((w - pow2_dequantize(c0, s0, bits)) ** 2).sum(axis=1)
    if per_channel:
        assert np.all(e <= e0 * (1 + 1e-12) + 1e-300)
    else:
        assert e.sum() <= e0.sum() * (1 + 1e-12) + 1e-300
    # same for linear
    lin = linear_discretize(w, bits, per_channel=per_channel)
    lin0 = linear_discretize(w, bits, per_channel=per_channel, search=False)
    assert ((w - lin) ** 2).sum() <= ((w - lin0) ** 2).sum() * (1 + 1e-12) + 1e-300


@settings(max_examples=40, deadline=None)
@given(cases)
def test_per_layer_scale_is_one_value_and_linear_level_count(case):
    bits, o, k, _, heavy, seed = case
    w = weights(seed, o, k, heavy)
    _, scale = pow2_discretize(w, bits, per_channel=False)
    assert np.all(scale == scale[0])
    q = (1 << (bits - 1)) - 1
    for per_channel in (True, False):
        lin = linear_discretize(w, bits, per_channel=per_channel)
        assert lin.shape == w.shape
        for row in (lin if per_channel else lin.reshape(1, -1)):
            assert len(np.unique(row)) <= 2 * q + 1  # 0 and +-k * delta, k = 1..q
        if not per_channel:
            assert len(np.unique(np.abs(lin[lin != 0]))) <= q


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 60), st.booleans(), st.integers(0, 2**32 - 1))
def test_pow2_two_bits_is_ternary(o, k, per_channel, seed):
    w = weights(seed, o, k, False)
    codes, scale = pow2_discretize(w, 2, per_channel=per_channel)
    assert set(np.unique(codes)) <= {0, 1, 3}
    v = pow2_dequantize(codes, scale, 2)
    assert np.all((v == 0) | (np.abs(v) == scale[:, None]))
    lin = linear_discretize(w, 2, per_channel=per_channel)
    for row in lin:
        assert len(np.unique(np.abs(row[row != 0]))) <= 1
    # both methods are the same ternary quantizer with the same search: the same squared error
    assert np.isclose(((w - v) ** 2).sum(), ((w - lin) ** 2).sum(), rtol=1e-9, atol=1e-300)


def test_bad_arguments():
    w = np.ones((2, 3))
    for bad in (1, 7):
        with pytest.raises(ValueError):
            pow2_discretize(w, bad)
    for bad in (1, 9):
        with pytest.raises(ValueError):
            exp_discretize(w, bad)
        with pytest.raises(ValueError):
            linear_discretize(w, bad)
    with pytest.raises(ValueError):
        pow2_discretize(w, 3, max_levels=4)
    with pytest.raises(ValueError):
        pow2_discretize(w, 3, max_levels=0)


def test_zero_weights():
    codes, scale = pow2_discretize(np.zeros((3, 4)), 4)
    assert np.all(codes == 0) and np.all(scale > 0)
    codes, scale, base = exp_discretize(np.zeros((3, 4)), 4)
    assert np.all(codes == 0) and np.all(scale > 0) and np.all((0 < base) & (base < 1))
    assert np.all(linear_discretize(np.zeros((3, 4)), 4) == 0)
    w = np.zeros((4, 1))
    w[1, 0] = 0.7  # all-zero channels next to a nonzero one: per layer still one scale for all
    for search in (True, False):
        _, scale = pow2_discretize(w, 2, per_channel=False, search=search)
        assert np.all(scale == scale[0]) and scale[0] > 0


tuned_cases = st.tuples(st.integers(2, 8), st.integers(1, 5), st.integers(1, 50), st.booleans(), st.booleans(),
                        st.integers(0, 2**32 - 1))


@settings(max_examples=25, deadline=None)
@given(tuned_cases)
def test_tuned_base_levels_nearest_and_never_worse_than_pow2(case):
    bits, o, k, per_channel, heavy, seed = case
    n = (1 << (bits - 1)) - 1
    w = weights(seed, o, k, heavy)
    codes, scale, base = exp_discretize(w, bits, per_channel=per_channel)
    assert codes.dtype == np.uint8 and codes.shape == w.shape and codes.max() < (1 << bits)
    assert scale.shape == base.shape == (o,) and np.all(scale > 0) and np.all((0 < base) & (base < 1))
    if not per_channel:
        assert np.all(scale == scale[0]) and np.all(base == base[0])
    v = exp_dequantize(codes, scale, base, bits)
    assert np.all((v == 0) | (np.sign(v) == np.sign(w))) and np.all(codes[v == 0] == 0)
    # every weight at the nearest level of its row's q and s (brute force over all levels, 0 included)
    lv = np.concatenate([np.zeros((o, 1)), scale[:, None] * base[:, None] ** np.arange(n)[None, :]], axis=1)
    best = np.abs(np.abs(w)[:, :, None] - lv[:, None, :]).min(axis=2)
    assert np.allclose(np.abs(np.abs(w) - np.abs(v)), best, rtol=1e-9, atol=1e-15)
    # the same rounding through an explicit level table (what the integer build does with its codebook)
    assert np.array_equal(exp_dequantize(nearest_codes(w, lv, bits), scale, base, bits), v)
    # q = 1/2 is among the candidates and the scale search is the same: never worse than powers of two
    if bits <= 6:
        c2, s2 = pow2_discretize(w, bits, per_channel=per_channel)
        e, e2 = ((w - v) ** 2).sum(axis=1), ((w - pow2_dequantize(c2, s2, bits)) ** 2).sum(axis=1)
        if per_channel:
            assert np.all(e <= e2 * (1 + 1e-9) + 1e-300)
        else:
            assert e.sum() <= e2.sum() * (1 + 1e-9) + 1e-300
    if bits == 2:  # one level: the ternary quantizer, as linear
        lin = linear_discretize(w, 2, per_channel=per_channel)
        assert np.isclose(((w - v) ** 2).sum(), ((w - lin) ** 2).sum(), rtol=1e-9, atol=1e-300)


def test_tuned_base_beats_pow2_on_heavy_tailed_weights():
    """Where levels a factor 2 apart are too coarse at the top (b = 4, 5), the tuned base is much better."""
    w = weights(1, 16, 200, True)
    for bits in (4, 5):
        c, s, q = exp_discretize(w, bits)
        c2, s2 = pow2_discretize(w, bits)
        e = ((w - exp_dequantize(c, s, q, bits)) ** 2).sum()
        e2 = ((w - pow2_dequantize(c2, s2, bits)) ** 2).sum()
        assert e < 0.6 * e2 and np.all(q > 0.5), (bits, e, e2)


def test_nearest_codes_repeats_zeros_and_ties():
    # per layer: one row of levels for all channels; repeated levels take the first m; ties the smaller level
    lv = np.array([[0.0, 1.0, 0.5, 0.5, 0.0]])  # 3 bits would be 4 columns: use bits 4 (8 columns)
    lv = np.concatenate([lv, np.zeros((1, 3))], axis=1)
    w = np.array([[0.9, -0.74, 0.76, -0.25, 0.2, 0.0, -2.0]])
    codes = nearest_codes(w, lv, 4)
    assert codes.tolist() == [[1, 8 | 2, 1, 0, 0, 0, 8 | 1]]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        # registered in an order different from the forward order (c0, c1, mid, fc)
        self.mid = torch.nn.Linear(16, 16)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)
        self.c1 = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.c0 = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)

    def forward(self, x):
        x = torch.relu(self.bn(self.c1(torch.relu(self.c0(x)))))  # 16x16 -> 8x8 -> 4x4
        x = x.flatten(2)  # (N, 8, 16)
        x = self.mid(x).flatten(1)
        return self.fc(x)


@pytest.mark.parametrize("method", ["exp", "pow2", "linear"])
def test_discretize_model_keeps_first_and_last(method):
    net = Net().eval()
    x = torch.randn(2, 1, 16, 16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q = discretize_model(net, 3, method=method, example_input=x)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # original untouched
    sd = q.state_dict()
    for name in ("c0.weight", "fc.weight", "c0.bias", "fc.bias", "c1.bias", "mid.bias", "bn.weight"):
        assert torch.equal(sd[name], before[name]), name
    for name in ("c1.weight", "mid.weight"):
        assert not torch.equal(sd[name], before[name]), name
        w = before[name].double().numpy()
        if method == "exp":
            codes, scale, base = exp_discretize(w, 3)
            expect = exp_dequantize(codes, scale, base, 3)
        elif method == "pow2":
            codes, scale = pow2_discretize(w, 3)
            expect = pow2_dequantize(codes, scale, 3)
        else:
            expect = linear_discretize(w, 3)
        assert np.allclose(sd[name].double().numpy(), expect, atol=1e-7)
        assert len(np.unique(np.abs(sd[name].numpy()))) <= 4 * w.shape[0]
    q(x)  # still runs
    # without skipping, everything is discretized; without an example input, registration order is used
    allq = discretize_model(net, 3, method=method, skip_first_last=False).state_dict()
    assert not torch.equal(allq["c0.weight"], before["c0.weight"])
    reg = discretize_model(net, 3, method=method).state_dict()  # registration order: mid first, c0 last
    assert torch.equal(reg["mid.weight"], before["mid.weight"]) and torch.equal(reg["c0.weight"], before["c0.weight"])
    assert not torch.equal(reg["fc.weight"], before["fc.weight"])
