"""End to end on real data: train a residual CNN on MNIST-5k, export it, build it with edgepack, run it.

    python examples/mnist_cnn.py [--board cortex-m7] [--out build/mnist] [--format pt2|onnx] [--weights exp4]

Trains the float model (about half a minute on 2 cores), saves it as .pt2 (torch.export) or .onnx, then runs

    edgepack build model.pt2 --board BOARD --calib calib.npy -o OUT --eval test.npz   (card: OUT/quantization_card.md)
    edgepack run OUT --input test_x.npy --raw emu.npy --on emulator     (boards with an emulator)
    edgepack run OUT --input test_x.npy --raw host.npy --on host
    edgepack run OUT --input test_x.npy --raw ref.npy --on reference

and prints float and int8 accuracy on the 1,000 test images (int8 from the emulator's outputs where there is
one) and whether emulator, host and reference agree bit for bit.
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

from edgepack.boards import get_board  # noqa: E402


def sh(*args):
    cmd = [sys.executable, "-m", "edgepack", *map(str, args)]
    print("$ edgepack " + " ".join(map(str, args)), flush=True)
    r = subprocess.run(cmd)
    if r.returncode:
        sys.exit(r.returncode)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", default="cortex-m7")
    ap.add_argument("--out", default="build/mnist")
    ap.add_argument("--format", default="pt2", choices=["pt2", "onnx"])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--weights", default="int8", help="edgepack build --weights (int8, exp3, exp4, pow2-4, ...)")
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
        torch.onnx.export(model, example, path, dynamo=True)
    np.save(work / "calib.npy", xtr[::20])  # 200 training images, 20 per digit
    np.save(work / "test_x.npy", xte)
    np.save(work / "test_y.npy", yte)

    sh("build", path, "--board", a.board, "--calib", work / "calib.npy", "-o", a.out, "--weights", a.weights)
    targets = ["host", "reference"]
    if get_board(a.board).get("emulator"):
        targets.insert(0, "emulator")
    raws = {}
    for on in targets:
        sh("run", a.out, "--input", work / "test_x.npy", "--raw", work / f"raw_{on}.npy", "--output",
           work / f"y_{on}.npy", "--on", on)
        raws[on] = np.load(work / f"raw_{on}.npy")
    acc_q = accuracy(np.load(work / f"y_{targets[0]}.npy"), yte)
    same = all(np.array_equal(raws[t], raws["reference"]) for t in targets)
    print(f"float accuracy {acc_f * 100:.1f}%  built accuracy (int8 activations, {a.weights} weights, {a.board}, "
          f"{targets[0]}) {acc_q * 100:.1f}%  "
          f"{' == '.join(targets)} on all {len(yte)} test images: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
