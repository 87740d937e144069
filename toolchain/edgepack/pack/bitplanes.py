"""Bit-packed storage of binary (+1 / -1) tensors and of multi-bit integer codes as bitplanes.

Layout (the one the XNOR-popcount kernels and ``reference/ops_binary.py`` use):

* Channel-last. A tensor of shape (..., C) of +1 / -1 values is stored as (..., Cw) ``uint32`` words with
  Cw = ceil(C / 32): channel c lives in word c // 32, at bit c % 32 (bit 0 = least significant bit, so the
  layout does not depend on the byte order of the machine: a word is a ``uint32_t``, not 4 bytes).
* Bit value 1 means -1, bit value 0 means +1 (``pack`` of a bool array: True means -1).
* Padding: when C is not a multiple of 32, the last word of every pixel holds 32 - C % 32 pad bits, bits
  C % 32 .. 31; they are always 0. Every pixel starts on a word boundary (the padding is per pixel, not
  only at the end of the tensor), so a pixel takes ceil(C / 32) * 4 bytes. Because pad bits are 0 in both
  activations and weights, they XOR to 0 and a tap's dot product is C - 2 * popcount(x XOR w).
* Multi-bit integer codes of ``bits`` bits (2..8) are stored as ``bits`` bitplanes: an array of shape
  (bits, ..., Cw) where plane k is the packed bit k of each code's two's-complement (low ``bits`` bits)
  representation, bit 1 meaning the bit is set; pad bits 0 as above. A signed code v is
  -2^(bits-1) * b[bits-1] + sum_{k < bits-1} 2^k b[k]; an unsigned one is sum_k 2^k b[k].
"""

from __future__ import annotations

import math

import numpy as np

WORD_BITS = 32


def num_words(channels: int) -> int:
    """Words per pixel for ``channels`` packed channels: ceil(channels / 32)."""
    if channels < 0:
        raise ValueError(f"channel count must be >= 0, got {channels}")
    return (int(channels) + WORD_BITS - 1) // WORD_BITS


def packed_bytes(shape, bits: int = 1) -> int:
    """Bytes of the packed form of an unpacked tensor of ``shape`` (channel last), per-word padding included.

    ``bits`` > 1 counts the bitplanes of multi-bit codes (one packed tensor per bit)."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ValueError("packed_bytes needs a shape with a channel axis")
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    return bits * math.prod(shape[:-1]) * num_words(shape[-1]) * 4


def _check_axis(ndim: int, axis: int):
    if ndim == 0:
        raise ValueError("cannot pack a scalar: the packed axis is the channel axis")
    if axis not in (-1, ndim - 1):
        raise ValueError(f"only the last (channel) axis can be packed, got axis={axis} for a {ndim}-d array; "
                         "move the channel axis last first (the layout is channel-last)")


def _pack_bits(set_: np.ndarray) -> np.ndarray:
    """(..., C) bool, True = bit 1 -> (..., ceil(C/32)) uint32, channel c at bit c % 32 of word c // 32."""
    c = set_.shape[-1]
    cw = num_words(c)
    lead = set_.shape[:-1]
    padded = np.zeros(lead + (cw * WORD_BITS,), dtype=bool)
    padded[..., :c] = set_
    by = np.packbits(padded.reshape(lead + (cw, 4, 8)), axis=-1, bitorder="little")[..., 0].astype(np.uint32)
    return by[..., 0] | (by[..., 1] << 8) | (by[..., 2] << 16) | (by[..., 3] << 24)


def _unpack_bits(words: np.ndarray, channels: int) -> np.ndarray:
    """(..., Cw) uint32 -> (..., channels) bool, True where the bit is 1."""
    words = np.asarray(words)
    if words.dtype != np.uint32:
        if not np.issubdtype(words.dtype, np.integer):
            raise TypeError(f"packed words must be integers (uint32), got {words.dtype}")
        words = words.astype(np.uint32)
    if words.ndim == 0:
        raise ValueError("packed words need a word axis")
    if words.shape[-1] != num_words(channels):
        raise ValueError(f"{channels} channels need {num_words(channels)} words per pixel, "
                         f"the array has {words.shape[-1]}")
    shifts = np.arange(WORD_BITS, dtype=np.uint32)
    bits = ((words[..., :, None] >> shifts) & np.uint32(1)).astype(bool)
    return bits.reshape(words.shape[:-1] + (-1,))[..., :channels]


def pack(values, axis: int = -1) -> np.ndarray:
    """+1 / -1 values (any integer or float dtype), or bools (True = -1), along the last axis -> uint32 words.

    Shape (..., C) -> (..., ceil(C / 32)); bit 1 = -1, pad bits 0 (module docstring)."""
    v = np.asarray(values)
    _check_axis(v.ndim, axis)
    if v.dtype == bool:
        neg = v
    else:
        if not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
            raise TypeError(f"pack expects +1/-1 numbers or bools, got dtype {v.dtype}")
        neg = v == -1
        if not np.all(neg | (v == 1)):
            bad = v[~(neg | (v == 1))].reshape(-1)[0]
            raise ValueError(f"pack expects only +1 and -1 values (or bools), found {bad!r}")
    return _pack_bits(neg)


def unpack(words, channels: int) -> np.ndarray:
    """uint32 words (..., ceil(channels / 32)) -> (..., channels) int8 of +1 / -1. Pad bits are ignored."""
    return (1 - 2 * _unpack_bits(words, channels).astype(np.int8)).astype(np.int8)


def _check_bits(bits: int):
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bitplanes hold 2..8-bit codes, got bits={bits!r}")


def pack_planes(codes, bits: int, axis: int = -1) -> np.ndarray:
    """Integer codes (..., C) of ``bits`` bits -> (bits, ..., ceil(C / 32)) uint32 bitplanes.

    Plane k holds bit k of each code's low ``bits`` bits (two's complement for negative codes), so codes may
    be signed, in [-2^(bits-1), 2^(bits-1)), or unsigned, in [0, 2^bits); ``unpack_planes`` needs to be told
    which."""
    _check_bits(bits)
    c = np.asarray(codes)
    _check_axis(c.ndim, axis)
    if not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"pack_planes expects integer codes, got dtype {c.dtype}")
    c = c.astype(np.int64)
    lo, hi = -(1 << (bits - 1)), (1 << bits) - 1
    if c.size and (c.min() < lo or c.max() > hi):
        raise ValueError(f"codes out of range for {bits} bits: [{c.min()}, {c.max()}] not within [{lo}, {hi}]")
    u = c & ((1 << bits) - 1)
    return np.stack([_pack_bits(((u >> k) & 1).astype(bool)) for k in range(bits)])


def unpack_planes(planes, channels: int, signed: bool = True) -> np.ndarray:
    """(bits, ..., ceil(channels / 32)) bitplanes -> (..., channels) codes: int8 when ``signed``, else uint8."""
    p = np.asarray(planes)
    if p.ndim < 2:
        raise ValueError("bitplanes need a plane axis and a word axis")
    bits = p.shape[0]
    _check_bits(bits)
    u = np.zeros(p.shape[1:-1] + (channels,), dtype=np.int64)
    for k in range(bits):
        u |= _unpack_bits(p[k], channels).astype(np.int64) << k
    if signed:
        u = np.where(u >= (1 << (bits - 1)), u - (1 << bits), u)
        return u.astype(np.int8)
    return u.astype(np.uint8)
