"""The reference fixed-point arithmetic against a plain-integer transcription of TFLite's functions."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepack.reference.arith import quantize_multiplier, requantize, round_div_away

I32 = st.integers(-(2**31), 2**31 - 1)


def srdhm_int(a, b):
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    return abs(v) // (1 << 31) * (1 if v >= 0 else -1)


def rdbpot_int(x, e):
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def requant_int(x, m, s):
    left, right = max(s, 0), max(-s, 0)
    x = max(min(x << left, 2**31 - 1), -(2**31))
    return rdbpot_int(srdhm_int(x, m), right)


@settings(max_examples=400, deadline=None)
@given(I32, st.floats(1e-6, 60.0), st.integers(0, 3))
def test_requantize_matches_tflite_integer_transcription(x, real, k):
    m, s = quantize_multiplier(real)
    x = x >> (8 * k)  # also small accumulators
    assert int(requantize(np.int64(x), m, s)) == requant_int(x, m, s)


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-9, 1e9))
def test_quantize_multiplier_represents_the_real(real):
    m, s = quantize_multiplier(real)
    if m == 0:
        assert real < 2.0**-31
        return
    assert 2**30 <= m < 2**31
    assert abs(m * 2.0 ** (s - 31) - real) <= real * 2.0**-30


def test_rounding_of_ties():
    # multiplier 0.5 is M = 2^30, shift 0: SRDHM's nudge rounds ties toward +infinity (TFLite's behaviour)
    m, s = quantize_multiplier(0.5)
    assert (m, s) == (2**30, 0)
    got = [int(requantize(np.int64(v), m, s)) for v in (-3, -1, 1, 3, 5)]
    assert got == [-1, 0, 1, 2, 3]
    # multiplier 0.25 is M = 2^30, shift -1: the rounding shift rounds ties away from zero
    m, s = quantize_multiplier(0.25)
    got = [int(requantize(np.int64(v), m, s)) for v in (-6, -2, 2, 6)]
    assert got == [-2, -1, 1, 2]
    assert round_div_away(np.array([5, -5, 4, -4, 6]), 4).tolist() == [1, -1, 1, -1, 2]
