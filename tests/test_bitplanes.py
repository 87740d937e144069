"""pack.bitplanes: the packed storage of binary tensors and bitplanes (layout in its module docstring)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepack.pack.bitplanes import num_words, pack, pack_planes, packed_bytes, unpack, unpack_planes
from edgepack.reference import ops_binary

EDGE_CHANNELS = [1, 31, 32, 33, 64, 65, 100]
channels = st.one_of(st.sampled_from(EDGE_CHANNELS), st.integers(1, 200))
lead_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


def _pm1(seed, shape):
    return np.where(np.random.default_rng(seed).random(shape) < 0.5, -1, 1).astype(np.int8)


def _pad_mask(c):
    """uint32 mask of the pad bits of the last word of a pixel with c channels."""
    r = c % 32
    return np.uint32(0) if r == 0 else np.uint32((0xFFFFFFFF << r) & 0xFFFFFFFF)


@settings(max_examples=200, deadline=None)
@given(lead=lead_shapes, c=channels, seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(lead, c, seed):
    v = _pm1(seed, lead + (c,))
    w = pack(v)
    assert w.dtype == np.uint32 and w.shape == lead + (num_words(c),)
    assert np.all(w[..., -1] & _pad_mask(c) == 0)  # pad bits are zero
    assert w.nbytes == packed_bytes(v.shape) == int(np.prod(lead, dtype=np.int64)) * ((c + 31) // 32) * 4
    u = unpack(w, c)
    assert u.dtype == np.int8
    np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(pack(v == -1), w)  # bools: True = -1
    np.testing.assert_array_equal(w, ops_binary._pack(v == -1))  # the reference's layout
    np.testing.assert_array_equal(ops_binary._bits(w, c), v)


@pytest.mark.parametrize("c", EDGE_CHANNELS)
def test_bit_positions(c):
    for ch in {0, c // 2, c - 1}:
        v = np.ones((2, c), np.int8)
        v[1, ch] = -1
        w = pack(v)
        assert np.all(w[0] == 0)
        expect = np.zeros(num_words(c), np.uint32)
        expect[ch // 32] = np.uint32(1) << np.uint32(ch % 32)
        np.testing.assert_array_equal(w[1], expect)
    full = pack(-np.ones((3, c), np.int8))  # every channel -1: only the pad bits stay 0
    assert np.all(full[:, :-1] == 0xFFFFFFFF)
    assert np.all(full[:, -1] == np.uint32(~_pad_mask(c) & 0xFFFFFFFF))


def test_packed_bytes_counts_word_padding():
    assert packed_bytes((1, 4, 4, 1)) == 16 * 4
    assert packed_bytes((1, 4, 4, 32)) == 16 * 4
    assert packed_bytes((1, 4, 4, 33)) == 16 * 8
    assert packed_bytes((10, 65)) == 10 * 12
    assert packed_bytes((7, 100), bits=3) == 3 * 7 * 16


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        pack(np.array([1, 0, -1]))
    with pytest.raises(ValueError):
        pack(np.ones((3, 4)), axis=0)
    with pytest.raises(ValueError):
        unpack(np.zeros((2, 2), np.uint32), 65)
    with pytest.raises(ValueError):
        pack_planes(np.array([4]), 2)  # 2-bit codes are within [-2, 3]
    with pytest.raises(ValueError):
        pack_planes(np.array([0]), 9)


@settings(max_examples=200, deadline=None)
@given(lead=lead_shapes, c=channels, bits=st.integers(2, 8), signed=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_planes_round_trip(lead, c, bits, signed, seed):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    codes = np.random.default_rng(seed).integers(lo, hi, size=lead + (c,), endpoint=True)
    codes.reshape(-1)[:2] = [lo, hi][:codes.size]  # the extremes always appear
    p = pack_planes(codes, bits)
    assert p.dtype == np.uint32 and p.shape == (bits,) + lead + (num_words(c),)
    assert np.all(p[..., -1] & _pad_mask(c) == 0)
    assert p.nbytes == packed_bytes(codes.shape, bits=bits)
    u = unpack_planes(p, c, signed=signed)
    assert u.dtype == (np.int8 if signed else np.uint8)
    np.testing.assert_array_equal(u.astype(np.int64), codes)
    for k in range(bits):  # plane k is the packed bit k of the two's-complement code
        np.testing.assert_array_equal(p[k], ops_binary._pack(((codes & ((1 << bits) - 1)) >> k) & 1 == 1))
