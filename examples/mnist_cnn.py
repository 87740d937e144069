"""End to end on real data: train a residual CNN on MNIST-5k, export it, build it with edgepack, run it.

    python examples/mnist_cnn.py [--board host] [--out build/mnist] [--format pt2|onnx]

Trains the float model (a few seconds), saves it as .pt2 (torch.export) and .onnx, then runs

    edgepack build model.pt2 --board BOARD --calib calib.npy -o OUT
    edgepack run OUT --input test_x.npy --raw raw.npy --on host
    edgepack run OUT --input test_x.npy --raw ref.npy --on reference

and prints float and int8 accuracy on the 1,000 test images and whether host == reference bit for bit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_common import ResidualCNN, accuracy, float_logits, mnist5k, train  # noqa: E402


def sh(*args):
    cmd = [sys.executable, "-m", "edgepack", *map(str, args)]
    print("$ edgepack " + " ".join(map(str, args)), flush=True)
    r = subprocess.run(cmd)
    if r.returncode:
        sys.exit(r.returncode)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", default="host")
    ap.add_argument("--out", default="build/mnist")
    ap.add_argument("--format", default="pt2", choices=["pt2", "onnx"])
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()
    work = Path(a.out).parent
    work.mkdir(parents=True, exist_ok=True)

    xtr, ytr, xte, yte = mnist5k()
    t = time.time()
    model = train(ResidualCNN(), xtr, ytr, epochs=a.epochs)
    print(f"trained in {time.time() - t:.1f} s")
    acc_f = accuracy(float_logits(model, xte), yte)

    example = (torch.from_numpy(xte[:1]),)
    path = work / f"mnist_cnn.{a.format}"
    if a.format == "pt2":
        torch.export.save(torch.export.export(model, example), path)
    else:
        torch.onnx.export(model, example, path, dynamo=True, input_names=["image"], output_names=["logits"])
    np.save(work / "calib.npy", xtr[::20])  # 200 training images, 20 per digit
    np.save(work / "test_x.npy", xte)
    np.save(work / "test_y.npy", yte)

    sh("build", path, "--board", a.board, "--calib", work / "calib.npy", "-o", a.out)
    sh("run", a.out, "--input", work / "test_x.npy", "--raw", work / "raw_host.npy", "--output",
       work / "y_host.npy", "--on", "host")
    sh("run", a.out, "--input", work / "test_x.npy", "--raw", work / "raw_ref.npy", "--on", "reference")
    raw_host, raw_ref = np.load(work / "raw_host.npy"), np.load(work / "raw_ref.npy")
    acc_q = accuracy(np.load(work / "y_host.npy"), yte)
    same = np.array_equal(raw_host, raw_ref)
    print(f"float accuracy {acc_f * 100:.1f}%  int8 accuracy ({a.board}) {acc_q * 100:.1f}%  "
          f"host == reference on all {len(raw_ref)} test images: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
