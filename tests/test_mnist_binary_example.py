"""The binary MNIST example in its quick mode: float, ReCU and sign+STE trained, the ReCU model built for
cortex-m7 with 1-bit layers, and its emulator outputs equal the host's bit for bit."""

from mnist_binary import main
from toolchains import require_board_tools


def test_quick_binary_example(tmp_path):
    require_board_tools("cortex-m7")
    r = main(["--quick", "--out", str(tmp_path)])
    assert set(r["acc"]) >= {"float", "recu", "ste", "recu_emulator", "recu_host"}
    assert r["emulator_equals_host"]
    assert r["acc"]["recu_emulator"] == r["acc"]["recu_host"]
    assert len(r["binary_layers"]) == 3
    assert r["acc"]["recu"] > 0.6  # one epoch on 2,000 images
