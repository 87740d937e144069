"""The compressibility-loss example in its quick mode: two lambdas, host builds; the loss makes the int8 weights
sparser and lower in entropy, and the sparse build computes exactly what the int8 build computes."""

from compressibility_sweep import main


def test_quick_compressibility_example(tmp_path):
    r = main(["--quick", "--out", str(tmp_path)])
    base, comp = r["rows"]
    assert base["lambda"] == 0 and comp["lambda"] > 0
    assert comp["sparsity"] > base["sparsity"] + 0.1 and comp["entropy_bits"] < base["entropy_bits"]
    assert comp["zlib_bytes"] < base["zlib_bytes"]
    assert all(row["sparse_equals_int8"] for row in r["rows"])
    assert all(row["weights_sparse_bytes"] <= row["weights_int8_bytes"] for row in r["rows"])
    assert (tmp_path / "compressibility.png").exists()
