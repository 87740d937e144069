"""Sparse int8 weights: the storage formats of ``--weights sparse``.

A layer's int8 weight matrix (O, K) -- conv: O x (KH*KW*I) in OHWI order, dense: O x I, exactly the int8
format's rows -- has two sparse encodings; the build stores each layer in whichever of dense int8, CSR and
bitmask takes the fewest bytes (:func:`choose`).

CSR (compressed sparse rows), three arrays:

* ``values``  int8            (nnz,)   the nonzero weights, row by row, in increasing column order;
* ``index``   uint8 / uint16  (nnz,)   the column k of each value in its row: uint8 when K <= 256, else uint16
                                       (so K <= 65,536);
* ``rowptr``  int32           (O + 1,) row o's values are values[rowptr[o] : rowptr[o + 1]]; rowptr[0] = 0,
                                       rowptr[O] = nnz.

  Bytes: nnz * (1 + index bytes) + 4 * (O + 1). Kernels visit only the nonzeros.

Bitmask, three arrays:

* ``values``  int8   (nnz,)            as in CSR;
* ``mask``    uint8  (O * ceil(K / 8),) row o's bit k (bit k % 8 of byte o * ceil(K/8) + k // 8) is 1 where
                                       w[o, k] != 0; pad bits 0;
* ``rowptr``  int32  (O + 1,)          as in CSR.

  Bytes: O * ceil(K / 8) + nnz + 4 * (O + 1). Kernels walk every position and multiply only where the bit
  is set; smaller than CSR above about 1/8 density (uint8 index) or 1/16 (uint16).

A layer with no nonzero weight at all keeps one (unread) zero value (and index), because C has no empty
arrays. The arithmetic is the int8 layer's either way: the zeros the formats leave out add exactly 0.
"""

from __future__ import annotations

import numpy as np

MAX_K = 1 << 16
ENCODINGS = ("csr", "bitmask")


def _rows(w):
    w = np.asarray(w)
    if w.dtype != np.int8:
        raise ValueError(f"sparse formats take int8 weights, got {w.dtype}")
    return w.reshape(w.shape[0], -1)


def _values_rowptr(rows):
    o_idx, k_idx = np.nonzero(rows)
    values = rows[o_idx, k_idx].astype(np.int8)
    rowptr = np.zeros(rows.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(o_idx, minlength=rows.shape[0]), out=rowptr[1:])
    return values, k_idx, rowptr


def index_dtype(k: int):
    return np.uint8 if k <= 256 else np.uint16


def pack_csr(w: np.ndarray):
    """(O, ...) int8 weights -> (values int8, index uint8|uint16, rowptr int32)."""
    rows = _rows(w)
    if rows.shape[1] > MAX_K:
        raise ValueError(f"rows of {rows.shape[1]} weights exceed the uint16 index range ({MAX_K})")
    values, k_idx, rowptr = _values_rowptr(rows)
    index = k_idx.astype(index_dtype(rows.shape[1]))
    if values.size == 0:
        values, index = np.zeros(1, np.int8), np.zeros(1, index.dtype)
    return values, index, rowptr


def pack_bitmask(w: np.ndarray):
    """(O, ...) int8 weights -> (values int8, mask uint8 (O * ceil(K/8),), rowptr int32)."""
    rows = _rows(w)
    values, _, rowptr = _values_rowptr(rows)
    mask = np.packbits(rows != 0, axis=1, bitorder="little").reshape(-1)
    if values.size == 0:
        values = np.zeros(1, np.int8)
    return values, mask, rowptr


def _check_rowptr(rowptr, o, n_values):
    rowptr = np.asarray(rowptr, np.int64)
    if rowptr.shape != (o + 1,) or rowptr[0] != 0 or np.any(np.diff(rowptr) < 0) or rowptr[-1] > n_values:
        raise ValueError("corrupt sparse weights: row pointers are not a non-decreasing 0 .. nnz sequence")
    return rowptr


def unpack_csr(values, index, rowptr, shape) -> np.ndarray:
    """The dense int8 weights of ``shape`` = (O, ...) back from CSR."""
    shape = tuple(int(v) for v in shape)
    o, k = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    rowptr = _check_rowptr(rowptr, o, len(values))
    nnz = int(rowptr[-1])
    rows = np.zeros((o, k), np.int8)
    cols = np.asarray(index[:nnz], np.int64)
    if nnz and cols.max() >= k:
        raise ValueError(f"corrupt sparse weights: column index {cols.max()} >= row length {k}")
    rows[np.repeat(np.arange(o), np.diff(rowptr)), cols] = np.asarray(values[:nnz], np.int8)
    return rows.reshape(shape)


def unpack_bitmask(values, mask, rowptr, shape) -> np.ndarray:
    """The dense int8 weights of ``shape`` = (O, ...) back from the bitmask encoding."""
    shape = tuple(int(v) for v in shape)
    o, k = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    kb = (k + 7) // 8
    mask = np.asarray(mask, np.uint8)
    if mask.shape != (o * kb,):
        raise ValueError(f"corrupt sparse weights: mask has {mask.size} bytes, expected {o * kb}")
    bits = np.unpackbits(mask.reshape(o, kb), axis=1, bitorder="little")
    if bits[:, k:].any():
        raise ValueError("corrupt sparse weights: mask pad bits are set")
    bits = bits[:, :k].astype(bool)
    rowptr = _check_rowptr(rowptr, o, len(values))
    if not np.array_equal(bits.sum(axis=1), np.diff(rowptr)):
        raise ValueError("corrupt sparse weights: mask bit counts disagree with the row pointers")
    rows = np.zeros((o, k), np.int8)
    rows[bits] = np.asarray(values[:int(rowptr[-1])], np.int8)
    return rows.reshape(shape)


def nbytes(*arrays) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays))


def encoded_bytes(w: np.ndarray) -> dict:
    """Bytes of each storage of ``w`` without packing: {"dense", "csr", "bitmask"} (csr absent when K > 65,536)."""
    rows = _rows(w)
    o, k = rows.shape
    nnz = int(np.count_nonzero(rows))
    out = {"dense": o * k, "bitmask": o * ((k + 7) // 8) + max(nnz, 1) + 4 * (o + 1)}
    if k <= MAX_K:
        out["csr"] = max(nnz, 1) * (1 + np.dtype(index_dtype(k)).itemsize) + 4 * (o + 1)
    return out


def choose(w: np.ndarray) -> str:
    """The storage with the fewest bytes: "dense", "csr" or "bitmask" (dense on ties)."""
    b = encoded_bytes(w)
    return min(b, key=lambda name: (b[name], name != "dense"))


def pack(w: np.ndarray, encoding: str):
    if encoding == "csr":
        return pack_csr(w)
    if encoding == "bitmask":
        return pack_bitmask(w)
    raise ValueError(f"unknown sparse encoding {encoding!r}")


def unpack(arrays, shape, encoding: str) -> np.ndarray:
    if encoding == "csr":
        return unpack_csr(*arrays, shape)
    if encoding == "bitmask":
        return unpack_bitmask(*arrays, shape)
    raise ValueError(f"unknown sparse encoding {encoding!r}")
