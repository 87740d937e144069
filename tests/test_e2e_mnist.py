"""End to end on MNIST-5k: a residual CNN trained here, exported as .pt2 and .onnx, built for the host;
host raw outputs equal reference raw outputs on all 1,000 test images, and int8 accuracy is within one
point of the float model's."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgepack.build import build
from edgepack.runners import run
from mnist_common import ResidualCNN, accuracy, float_logits, mnist5k, train
from toolchains import require_board_tools


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("mnist")
    xtr, ytr, xte, yte = mnist5k()
    model = train(ResidualCNN(), xtr, ytr, epochs=4, progress=False)
    example = (torch.from_numpy(xte[:1]),)
    torch.export.save(torch.export.export(model, example), work / "cnn.pt2")
    torch.onnx.export(model, example, work / "cnn.onnx", dynamo=True)
    np.save(work / "calib.npy", xtr[::20])
    return work, model, xte, yte


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_mnist_cnn_bit_exact_and_accurate(trained, fmt):
    work, model, xte, yte = trained
    out = work / f"out_{fmt}"
    report = build(work / f"cnn.{fmt}", "host", out, calib=work / "calib.npy")
    y_host, raw_host = run(out, xte, on="host")
    y_ref, raw_ref = run(out, xte, on="reference")
    assert raw_host.shape == (1000, 10)
    assert np.array_equal(raw_host, raw_ref), f"{(raw_host != raw_ref).sum()} raw outputs differ"
    acc_f = accuracy(float_logits(model, xte), yte)
    acc_q = accuracy(y_host, yte)
    print(f"\n{fmt}: float {acc_f:.4f} int8 {acc_q:.4f} build {report['build_seconds']['total']:.2f} s "
          f"arena {report['arena_bytes']} bound {report['liveness_bound_bytes']}")
    assert acc_f > 0.9
    assert abs(acc_q - acc_f) <= 0.01
    assert report["arena_bytes"] == report["liveness_bound_bytes"]
    assert [l["op"] for l in report["layers"]] == ["conv2d_s8", "maxpool_s8", "conv2d_s8", "conv2d_s8",
                                                   "add_s8", "conv2d_s8", "dense_s8"]


def test_generated_c_is_plain_strict_c99(trained):
    work = trained[0]
    out = work / "out_pt2"
    if not out.exists():
        build(work / "cnn.pt2", "host", out, calib=work / "calib.npy")
    sources = [out / "model.c", out / "weights.c"] + sorted((out / "kernels").glob("*.c"))
    for src in sources + [out / "model.h"] + sorted((out / "kernels").glob("*.h")):
        text = src.read_text()
        assert '#include "tvm' not in text and "TVM_DLL" not in text and "__tvm" not in text, src
        assert "DLTensor" not in text, src
        if src.parent.name == "kernels" or src.name == "weights.c":  # no float arithmetic on the inference path
            assert "float" not in re.sub(r"(?s)/\*.*?\*/", "", text) and "double" not in text, src
    for src in sources:
        subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-I", str(out), "-c", str(src),
                        "-o", "/dev/null"], check=True)
    # multipliers, shifts and biases are const data (flash), never in RAM
    weights = (out / "weights.c").read_text()
    assert re.findall(r"^(?!const )\w+ ep_c_", weights, re.M) == []
    report = json.loads((out / "report.json").read_text())
    assert report["object_sizes"]["data"] == 0


def test_cli_build_and_run(trained, tmp_path):
    work, _, xte, _ = trained
    np.save(tmp_path / "x.npy", xte[:7])
    out = tmp_path / "cli_out"
    r = subprocess.run([sys.executable, "-m", "edgepack", "build", str(work / "cnn.onnx"), "--board", "host",
                        "--calib", str(work / "calib.npy"), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for on in ("host", "reference"):
        r = subprocess.run([sys.executable, "-m", "edgepack", "run", str(out), "--input", str(tmp_path / "x.npy"),
                            "--output", str(tmp_path / f"y_{on}.npy"), "--raw", str(tmp_path / f"q_{on}.npy"),
                            "--on", on], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "q_host.npy"), np.load(tmp_path / "q_reference.npy"))
    y = np.load(tmp_path / "y_host.npy")
    assert y.shape == (7, 10) and y.dtype == np.float32


def test_mnist_cnn_on_the_cortex_m7_emulator(trained):
    """All 1,000 test images through the firmware in QEMU: raw outputs equal the host's, so the accuracy
    computed from emulator outputs equals the host accuracy exactly."""
    require_board_tools("cortex-m7")
    work, model, xte, yte = trained
    out = work / "out_m7"
    report = build(work / "cnn.pt2", "cortex-m7", out, calib=work / "calib.npy")
    stats = {}
    y_emu, raw_emu = run(out, xte, on="emulator", stats=stats)
    y_host, raw_host = run(out, xte, on="host")
    assert np.array_equal(raw_emu, raw_host)
    assert accuracy(y_emu, yte) == accuracy(y_host, yte)
    print(f"\ncortex-m7: accuracy {accuracy(y_emu, yte):.4f} flash {report['flash_bytes']} ram {report['ram_bytes']} "
          f"arena {report['arena_bytes']} instructions/inference {stats['instructions'].mean():.0f}")
    assert report["flash_bytes"] < report["board_flash_bytes"] and report["ram_bytes"] < report["board_ram_bytes"]
