"""The lowering's integer identities (codegen/lower.py) against the specification (reference/arith.py,
reference/ops.py): the 32-bit requantization over every accumulator the bound allows, its proof obligations,
zero-point folding and the weight blocking."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import armdsp
from edgepack.codegen.lower import (FAST_REQUANT_LIMIT, acc_bound, double_bias, fold_zero_point, pad_rows,
                                    plan_requant, requantize32)
from edgepack.reference.arith import quantize_multiplier, requantize

REALS = st.floats(2.0**-33, 60.0)


def edge_accs(limit):
    return np.array([0, 1, -1, 2, -2, limit - 1, -(limit - 1), limit // 2, -(limit // 2), limit // 3,
                     -(limit // 3) - 1], np.int64)


@settings(max_examples=300, deadline=None)
@given(REALS, st.integers(0, 2**31 - 1), st.integers(0, 30))
def test_requantize32_equals_reference_over_the_bound(real, seed, k):
    m, s = quantize_multiplier(real)
    left = max(s, 0)
    limit = max(FAST_REQUANT_LIMIT >> left, 1)  # |acc| * 2^left < 2^29: every accumulator the plan allows
    rng = np.random.default_rng(seed)
    acc = np.concatenate([edge_accs(limit), rng.integers(-limit + 1, limit, 64) >> (k % 24)])
    plan = plan_requant([limit - 1], [m], [s])
    assert plan.fast
    want = requantize(acc, m, s)
    got = requantize32(acc, plan.mult[0], plan.shift[0])
    assert np.array_equal(got, want), (real, m, s, acc[got != want][:5])


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**29) + 1, 2**29 - 1), st.integers(0, 2**31 - 1))
def test_smmulr_of_twice_x_is_the_srdhm(x, m):
    """q = (x M + 2^30) >> 31 (SRDHM, both nudges) is SMMULR(2x, M) (Arm semantics of tests/armdsp.py)."""
    from edgepack.reference.arith import srdhm
    assert armdsp.smmulr(2 * x, m) == int(srdhm(np.int64(x), np.int64(m)))


def test_requantize32_ties_and_shift_zero():
    # multiplier 0.5 (M = 2^30, s = 0, e = 0) and 0.25 (s = -1): the ties of both roundings
    for real in (0.5, 0.25, 0.125, 0.75):
        m, s = quantize_multiplier(real)
        acc = np.arange(-64, 65, dtype=np.int64)
        assert np.array_equal(requantize32(acc, m, s), requantize(acc, m, s)), real


def test_plan_requant_refuses_beyond_the_bound_and_zeroes_tiny_channels():
    m, s = quantize_multiplier(3.0)  # s = 2: left shift
    assert not plan_requant([(FAST_REQUANT_LIMIT >> 2)], [m], [s]).fast
    assert plan_requant([(FAST_REQUANT_LIMIT >> 2) - 1], [m], [s]).fast
    assert plan_requant([5], [m], [s]).left
    # e >= 30: every allowed accumulator rounds to 0, so the channel becomes multiplier 0
    tiny = quantize_multiplier(2.0**-31.5)
    assert tiny[1] <= -30
    p = plan_requant([FAST_REQUANT_LIMIT - 1, 100], [tiny[0], m], [tiny[1], s])
    assert p.fast and p.changed and p.mult[0] == 0 and p.shift[0] == 0 and p.mult[1] == m
    acc = np.concatenate([edge_accs(FAST_REQUANT_LIMIT), np.arange(-1000, 1000)])
    assert not requantize(acc, *tiny).any()
    assert not requantize32(acc, p.mult[0], p.shift[0]).any()


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_fold_zero_point_is_exact_and_bounded(seed):
    rng = np.random.default_rng(seed)
    o, k = rng.integers(1, 9), rng.integers(1, 40)
    w = rng.integers(-127, 128, (o, k))
    bias = rng.integers(-2**20, 2**20, o)
    zp = int(rng.integers(-128, 128))
    x = rng.integers(-128, 128, (16, k))
    folded = fold_zero_point(bias, w, zp)
    assert np.array_equal(x @ w.T + folded, (x - zp) @ w.T + bias)
    bound = acc_bound(bias, w)
    assert all(abs(int(b)) <= int(a) for b, a in zip(folded, bound))
    assert all(abs(int(v)) <= int(a) for v, a in zip(((x - zp) @ w.T + bias).max(0), bound))
    assert np.array_equal(double_bias(folded), 2 * folded)


def test_pad_rows():
    w = np.arange(2 * 9, dtype=np.int8).reshape(2, 9)
    p = pad_rows(w)
    assert p.shape == (2, 12) and np.array_equal(p[:, :9], w) and not p[:, 9:].any()
    assert pad_rows(p) is not None and pad_rows(p).shape == (2, 12)
