"""Exponent codes: the storage format of exponentially discretized weights (``--weights expN``, ``pow2-N``).

A code has ``bits`` = b bits (2..8): the top bit is the sign (1 = negative), the low b-1 bits a magnitude
index m. m = 0 is the weight 0; m = 1 .. 2^(b-1)-1 is the weight sign * s * q^(m-1) (m = 1 the largest).

* ``expN`` (tuned base q): in the integer kernels the weight is sign * codebook[g, m], an integer codebook of
  2^(b-1) int16 entries per channel g (or one row for the layer), codebook[g, 0] = 0 and codebook[g, m] =
  round(q^(m-1) * 2^P) (compress.quantize._exp_layer); the per-channel requantization multiplier carries
  s * 2^-P. :func:`decode_codebook`.
* ``pow2-N`` (q = 1/2): the weight is the integer sign * 2^(top - (m-1)), ``top`` being the layer's largest
  exponent index in use, and the multiplier carries scale * 2^-top. :func:`decode`.

Layout: row-major over (O, ...) like the int8 weights (conv: O, KH, KW, I; depthwise: KH, KW, C transposed to
C, KH, KW; dense: O, I); each output channel's row of K codes is a little-endian bit stream -- code i
occupies bits [i*b, i*b + b) of the row, bit j of the stream being bit j % 8 of byte j // 8 -- padded with
zero bits to a whole byte. So 4-bit codes are two per byte, low nibble first; 2-bit four per byte; 3-, 5-
and 6-bit codes straddle bytes. Row bytes = ceil(K * b / 8).
"""

from __future__ import annotations

import numpy as np


def row_bytes(k: int, bits: int) -> int:
    return (k * bits + 7) // 8


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """(O, ...) unsigned codes < 2^bits -> (O, row_bytes) uint8."""
    codes = np.asarray(codes)
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be 2..8, got {bits}")
    if codes.size and (codes.min() < 0 or codes.max() >= (1 << bits)):
        raise ValueError(f"codes must be in [0, {(1 << bits) - 1}]")
    o = codes.shape[0]
    flat = codes.reshape(o, -1).astype(np.uint16)
    k = flat.shape[1]
    stream = ((flat[:, :, None] >> np.arange(bits, dtype=np.uint16)) & 1).reshape(o, k * bits)
    pad = row_bytes(k, bits) * 8 - k * bits
    stream = np.concatenate([stream, np.zeros((o, pad), np.uint16)], axis=1).reshape(o, -1, 8)
    return (stream << np.arange(8, dtype=np.uint16)).sum(axis=2).astype(np.uint8)


def unpack(packed: np.ndarray, bits: int, shape) -> np.ndarray:
    """Inverse of :func:`pack`: (O, row_bytes) uint8 -> codes of ``shape`` (uint8)."""
    shape = tuple(shape)
    o = shape[0]
    k = int(np.prod(shape[1:], dtype=np.int64))
    stream = ((np.asarray(packed, np.uint8).reshape(o, -1)[:, :, None] >> np.arange(8, dtype=np.uint8)) & 1)
    stream = stream.reshape(o, -1)[:, :k * bits].reshape(o, k, bits).astype(np.uint16)
    return (stream << np.arange(bits, dtype=np.uint16)).sum(axis=2).astype(np.uint8).reshape(shape)


def decode(codes: np.ndarray, bits: int, top: int) -> np.ndarray:
    """Codes -> the integer weights sign * 2^(top - (m-1)) (0 for m = 0), int64."""
    codes = np.asarray(codes, np.int64)
    m = codes & ((1 << (bits - 1)) - 1)
    neg = (codes >> (bits - 1)) & 1
    mag = np.where(m == 0, 0, np.left_shift(1, np.maximum(top - (m - 1), 0)))
    return np.where(neg == 1, -mag, mag)


def decode_codebook(codes: np.ndarray, bits: int, codebook: np.ndarray) -> np.ndarray:
    """Codes (O, ...) -> the integer weights sign * codebook[g, m], int64; g = the output channel (row) when
    the codebook has O rows, 0 when it has one (per-layer granularity)."""
    codes = np.asarray(codes, np.int64)
    cb = np.asarray(codebook, np.int64)
    if cb.ndim != 2 or cb.shape[1] != 1 << (bits - 1) or cb.shape[0] not in (1, codes.shape[0]):
        raise ValueError(f"codebook shape {cb.shape} does not fit {bits}-bit codes of {codes.shape[0]} channels")
    flat = codes.reshape(codes.shape[0], -1)
    m = flat & ((1 << (bits - 1)) - 1)
    rows = np.broadcast_to(np.arange(codes.shape[0])[:, None] if cb.shape[0] > 1 else np.zeros((1, 1), np.int64),
                           m.shape)
    mag = cb[rows, m]
    return np.where((flat >> (bits - 1)) & 1 == 1, -mag, mag).reshape(codes.shape)


def accumulator_bound(w_int: np.ndarray, bias: np.ndarray, in_range: int = 255) -> int:
    """Worst-case |int32 accumulator| of a layer: max over channels of |bias| + in_range * sum |w|."""
    w = np.abs(np.asarray(w_int, np.int64)).reshape(len(bias), -1).sum(axis=1)
    return int((np.abs(np.asarray(bias, np.int64)) + in_range * w).max())
