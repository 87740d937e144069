"""Sparse int8 weights (--weights sparse): both storage formats round-trip, the TVM kernels equal the reference
over random shapes and densities (host here; every emulated board in test_boards_diff.py), and a build stores
each layer in its smallest form, with outputs bit-identical to the int8 build."""

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

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.sampled_from([1, 7, 8, 9, 255, 256, 257, 300]),
       st.sampled_from([0.0, 0.01, 0.2, 0.5, 1.0]), st.integers(0, 2**32 - 1), st.sampled_from(sparse.ENCODINGS))
def test_pack_unpack_round_trip(o, k, density, seed, enc):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (o, k)).astype(np.int8)
    w[rng.random(w.shape) >= density] = 0
    arrays = sparse.pack(w, enc)
    values, second, rowptr = arrays
    assert values.dtype == np.int8 and rowptr.dtype == np.int32
    assert rowptr[0] == 0 and rowptr[-1] == np.count_nonzero(w)
    if enc == "csr":
        assert second.dtype == (np.uint8 if k <= 256 else np.uint16)
    else:
        assert second.dtype == np.uint8 and second.size == o * ((k + 7) // 8)
    assert np.array_equal(sparse.unpack(arrays, w.shape, enc), w)
    assert sparse.nbytes(*arrays) == sparse.encoded_bytes(w)[enc]
    if np.count_nonzero(w):
        assert np.all(values != 0)


def test_choose_takes_the_fewest_bytes():
    rng = np.random.default_rng(0)
    dense = rng.integers(1, 128, (8, 72)).astype(np.int8)
    assert sparse.choose(dense) == "dense"
    half = dense.copy()
    half[:, ::2] = 0  # density 1/2: bitmask 9 + 36 per row beats 72 dense and 72 CSR
    assert sparse.choose(half) == "bitmask"
    few = np.zeros((8, 72), np.int8)
    few[:, 3] = 5  # one nonzero per row: CSR
    assert sparse.choose(few) == "csr"


def test_unpack_refuses_corrupt_rows():
    w = np.array([[0, 3, 0], [1, 0, 2]], np.int8)
    values, index, rowptr = sparse.pack_csr(w)
    with pytest.raises(ValueError, match="row pointers"):
        sparse.unpack_csr(values, index, rowptr[::-1].copy(), w.shape)
    bad = index.copy()
    bad[0] = 7
    with pytest.raises(ValueError, match="column index"):
        sparse.unpack_csr(values, bad, rowptr, w.shape)
    values, mask, rowptr = sparse.pack_bitmask(w)
    bad = mask.copy()
    bad[0] |= 0x80  # a pad bit
    with pytest.raises(ValueError, match="pad bits"):
        sparse.unpack_bitmask(values, bad, rowptr, w.shape)
    bad = mask.copy()
    bad[0] |= 0x01  # a bit without a value
    with pytest.raises(ValueError, match="bit counts"):
        sparse.unpack_bitmask(values, bad, rowptr, w.shape)
    with pytest.raises(ValueError, match="int8"):
        sparse.pack_csr(w.astype(np.int16))


@pytest.mark.parametrize("op", ["conv2d_s8_csr", "dense_s8_csr", "conv2d_s8_bitmask", "dense_s8_bitmask"])
def test_sparse_kernels_equal_reference(op, tmp_path_factory):
    @SETTINGS
    @given(opgen.sparse_case(op))
    def run_case(case):
        check(case, tmp_path_factory)

    run_case()


def test_build_stores_each_layer_in_its_smallest_form(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(16, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 4 * 4, 10))
    with torch.no_grad():  # first conv dense, middle conv very sparse (CSR), linear half sparse (bitmask)
        m[2].weight.mul_((torch.rand_like(m[2].weight) < 0.05).float())
        m[5].weight.mul_((torch.rand_like(m[5].weight) < 0.5).float())
    torch.export.save(torch.export.export(m.eval(), (torch.zeros(1, 3, 8, 8),)), tmp_path / "m.pt2")
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    r8 = build(tmp_path / "m.pt2", "host", tmp_path / "int8", calib=tmp_path / "c.npy")
    rs = build(tmp_path / "m.pt2", "host", tmp_path / "sparse", calib=tmp_path / "c.npy", weights="sparse")
    ops = [l["op"] for l in rs["layers"] if l["weight_format"]]
    assert ops == ["conv2d_s8", "conv2d_s8_csr", "dense_s8_bitmask"]
    assert rs["layers"][0]["sparse_note"].startswith("kept dense int8: 432 B dense against")
    q = {n.name: n for n in __import__("edgepack.graph", fromlist=["Graph"]).Graph.load(tmp_path / "sparse").nodes}
    for l8, ls in zip(r8["layers"], rs["layers"]):
        if ls["op"] in ("conv2d_s8_csr", "dense_s8_bitmask"):
            enc = ls["op"].rsplit("_", 1)[1]
            assert ls["weight_bytes"] == q[ls["name"]].attrs["encoded_bytes"][enc] < l8["weight_bytes"]
            assert ls["macs"] == l8["macs"] and ls["weight_shape"] == l8["weight_shape"]
    assert rs["weights_bytes"] < r8["weights_bytes"] and rs["flash_bytes"] < r8["flash_bytes"]
    raw8 = run(tmp_path / "int8", x, on="host")[1]
    raws = run(tmp_path / "sparse", x, on="host")[1]
    assert np.array_equal(raw8, raws)  # the same integers: zeros add nothing
    assert np.array_equal(run(tmp_path / "sparse", x, on="reference")[1], raws)
