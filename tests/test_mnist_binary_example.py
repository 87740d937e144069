"""The binary MNIST example in its quick mode: float, ReCU and sign+STE trained (one seed), the ReCU model built
for cortex-m7 with 1-bit layers, and its emulator outputs equal the host's bit for bit."""

import pytest

from mnist_binary import main
from toolchains import require_board_tools


def test_quick_binary_example(tmp_path):
    require_board_tools("cortex-m7")
    r = main(["--quick", "--out", str(tmp_path)])
    assert set(r["acc"]) >= {"float", "recu", "ste", "recu_export", "recu_emulator", "recu_host"}
    assert r["seeds"] == [0]
    assert {k: len(v) for k, v in r["acc_per_seed"].items()} == {"float": 1, "recu": 1, "ste": 1}
    for k in ("float", "recu", "ste"):
        assert r["acc"][k] == r["acc_per_seed"][k][0] == r["acc"][f"{k}_first_seed"]
    assert r["recu_minus_ste"] == pytest.approx(r["acc"]["recu"] - r["acc"]["ste"])
    assert r["emulator_equals_host"]
    assert r["acc"]["recu_emulator"] == r["acc"]["recu_host"]
    assert len(r["binary_layers"]) == 3
    assert r["acc"]["recu"] > 0.6  # one epoch on 2,000 images
    assert (tmp_path / "results.json").exists() and (tmp_path / "mnist_binary.pt2").exists()
