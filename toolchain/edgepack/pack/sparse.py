"""Sparse int8 weights: the storage format of ``--weights sparse`` (compressed sparse rows, CSR).

A layer's int8 weight matrix (O, K) -- conv: O x (KH*KW*I) in OHWI order, dense: O x I, exactly the int8
format's rows -- is stored as three arrays:

* ``values``  int8   (nnz,)   the nonzero weights, row by row, in increasing column order;
* ``index``   uint16 (nnz,)   the column k of each value in its row (so K <= 65,536);
* ``rowptr``  int32  (O + 1,) row o's values are values[rowptr[o] : rowptr[o + 1]]; rowptr[0] = 0,
                              rowptr[O] = nnz.

Bytes: nnz * 3 + (O + 1) * 4, against O * K for the dense int8 rows, so the format wins below a density of
about 1/3. A layer with no nonzero weight at all keeps one (unread) zero entry, because C has no empty arrays.
The arithmetic is the int8 layer's: the zero weights the format leaves out add exactly 0 to the accumulator.
"""

from __future__ import annotations

import numpy as np

MAX_K = 1 << 16


def pack(w: np.ndarray):
    """(O, ...) int8 weights -> (values int8, index uint16, rowptr int32) over the rows w.reshape(O, -1)."""
    w = np.asarray(w)
    if w.dtype != np.int8:
        raise ValueError(f"sparse.pack expects int8 weights, got {w.dtype}")
    rows = w.reshape(w.shape[0], -1)
    if rows.shape[1] > MAX_K:
        raise ValueError(f"rows of {rows.shape[1]} weights exceed the uint16 index range ({MAX_K})")
    o_idx, k_idx = np.nonzero(rows)
    values = rows[o_idx, k_idx].astype(np.int8)
    index = k_idx.astype(np.uint16)
    rowptr = np.zeros(rows.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(o_idx, minlength=rows.shape[0]), out=rowptr[1:])
    if values.size == 0:
        values, index = np.zeros(1, np.int8), np.zeros(1, np.uint16)
    return values, index, rowptr


def unpack(values, index, rowptr, shape) -> np.ndarray:
    """The dense int8 weights of ``shape`` = (O, ...) back from the three arrays."""
    shape = tuple(int(v) for v in shape)
    o = shape[0]
    k = int(np.prod(shape[1:], dtype=np.int64))
    rowptr = np.asarray(rowptr, np.int64)
    if rowptr.shape != (o + 1,) or rowptr[0] != 0 or np.any(np.diff(rowptr) < 0) or rowptr[-1] > len(values):
        raise ValueError("corrupt sparse weights: row pointers are not a non-decreasing 0 .. nnz sequence")
    nnz = int(rowptr[-1])
    rows = np.zeros((o, k), np.int8)
    row_of = np.repeat(np.arange(o), np.diff(rowptr))
    cols = np.asarray(index[:nnz], np.int64)
    if nnz and cols.max() >= k:
        raise ValueError(f"corrupt sparse weights: column index {cols.max()} >= row length {k}")
    rows[row_of, cols] = np.asarray(values[:nnz], np.int8)
    return rows.reshape(shape)


def nbytes(values, index, rowptr) -> int:
    return int(np.asarray(values).nbytes + np.asarray(index).nbytes + np.asarray(rowptr).nbytes)


def packed_bytes(w: np.ndarray) -> int:
    """Bytes of ``pack(w)`` without packing: 3 * nnz + 4 * (O + 1) (3 bytes if nnz = 0)."""
    w = np.asarray(w)
    nnz = max(int(np.count_nonzero(w)), 1)
    return 3 * nnz + 4 * (w.shape[0] + 1)
