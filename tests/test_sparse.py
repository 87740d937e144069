"""Sparse int8 weights (--weights sparse): the storage format round-trips, the TVM kernels equal the reference
over random shapes and densities (host here; every emulated board in test_boards_diff.py), and a build picks
sparse rows only where they are smaller, with output bit-identical to the int8 build."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import opgen
from edgepack.build import build
from edgepack.pack import sparse
from edgepack.runners import run
from test_ops_diff import check

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.integers(1, 300), st.sampled_from([0.0, 0.01, 0.2, 0.5, 1.0]), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(o, k, density, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (o, k)).astype(np.int8)
    w[rng.random(w.shape) >= density] = 0
    values, index, rowptr = sparse.pack(w)
    assert values.dtype == np.int8 and index.dtype == np.uint16 and rowptr.dtype == np.int32
    assert rowptr[0] == 0 and rowptr[-1] == np.count_nonzero(w)
    assert np.array_equal(sparse.unpack(values, index, rowptr, w.shape), w)
    assert sparse.nbytes(values, index, rowptr) == sparse.packed_bytes(w)
    if np.count_nonzero(w):
        assert np.all(values != 0)


def test_unpack_refuses_corrupt_rows():
    w = np.array([[0, 3, 0], [1, 0, 2]], np.int8)
    values, index, rowptr = sparse.pack(w)
    with pytest.raises(ValueError, match="row pointers"):
        sparse.unpack(values, index, rowptr[::-1].copy(), w.shape)
    bad = index.copy()
    bad[0] = 7
    with pytest.raises(ValueError, match="column index"):
        sparse.unpack(values, bad, rowptr, w.shape)
    with pytest.raises(ValueError, match="int8"):
        sparse.pack(w.astype(np.int16))


@SETTINGS
@given(opgen.sparse_case("conv2d_s8_sparse"))
def test_conv2d_s8_sparse(tmp_path_factory, case):
    check(case, tmp_path_factory)


@SETTINGS
@given(opgen.sparse_case("dense_s8_sparse"))
def test_dense_s8_sparse(tmp_path_factory, case):
    check(case, tmp_path_factory)


def test_build_sparse_only_where_smaller(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(16, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 4 * 4, 10))
    with torch.no_grad():  # the middle conv and the linear layer sparse, the first conv dense
        m[2].weight.mul_((torch.rand_like(m[2].weight) < 0.1).float())
        m[5].weight.mul_((torch.rand_like(m[5].weight) < 0.2).float())
    torch.export.save(torch.export.export(m.eval(), (torch.zeros(1, 3, 8, 8),)), tmp_path / "m.pt2")
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    r8 = build(tmp_path / "m.pt2", "host", tmp_path / "int8", calib=tmp_path / "c.npy")
    rs = build(tmp_path / "m.pt2", "host", tmp_path / "sparse", calib=tmp_path / "c.npy", weights="sparse")
    ops = [l["op"] for l in rs["layers"] if l["weight_format"]]
    assert ops == ["conv2d_s8", "conv2d_s8_sparse", "dense_s8_sparse"]
    first = rs["layers"][0]
    assert first["sparse_note"].startswith("kept dense int8: sparse rows would take")
    for l8, ls in zip(r8["layers"], rs["layers"]):
        if ls["op"].endswith("_sparse"):
            assert ls["weight_bytes"] == 3 * ls["weight_nonzero"] + 4 * (ls["weight_shape"][0] + 1)
            assert ls["weight_bytes"] < l8["weight_bytes"] and ls["macs"] == l8["macs"]
    assert rs["weights_bytes"] < r8["weights_bytes"] and rs["flash_bytes"] < r8["flash_bytes"]
    raw8 = run(tmp_path / "int8", x, on="host")[1]
    raws = run(tmp_path / "sparse", x, on="host")[1]
    assert np.array_equal(raw8, raws)  # the same integers: zeros add nothing
    assert np.array_equal(run(tmp_path / "sparse", x, on="reference")[1], raws)
