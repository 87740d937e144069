"""Exponent-coded weights on the MNIST-5k residual CNN, built for a board and measured on its emulator.

    python benchmarks/exp_mnist.py [--board cortex-m7] [--out build/exp_mnist] [--epochs 4] [--seed 0]
                                   [--weights int8,exp3,exp4,exp5,exp6,pow2-4] [--pairs]

Trains examples/mnist_common.ResidualCNN on the 4,000 MNIST-5k training digits (seeded; the model of
examples/mnist_cnn.py), exports it (.pt2), then for every weight format runs

    edgepack build mnist_cnn.pt2 --board BOARD --calib calib.npy --weights W --eval test.npz -o OUT/W

(200 training digits for calibration; first and last layer int8 as always). ``--eval`` runs the 1,000 test
digits on the reference, the host and the board's emulator, checks them bit for bit and measures the accuracy
from the emulator's outputs and the instructions per inference (QEMU -icount). Firmware flash is text + data
of firmware.elf from the board toolchain's ``size``. It prints one table (accuracy, flash, instructions, weight
bytes, kernel code bytes of the exponent-coded layers against the int8 build's kernels of the same layers) and
writes it to OUT/table.md and OUT/results.json. ``--pairs`` builds conv2d_expcb with its channel-pair path
(kernels.conv2d_expcb.PAIRS: fewer instructions, more code).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from mnist_common import ResidualCNN, accuracy, float_logits, mnist5k, train  # noqa: E402

from edgepack.boards import get_board  # noqa: E402
from edgepack.build import build  # noqa: E402


def elf_flash(folder: Path, board: dict):
    """text + data of firmware.elf (Berkeley size), or None without an ELF."""
    elf = folder / "firmware.elf"
    if not elf.exists():
        return None
    line = subprocess.run([board.get("toolchain_prefix", "") + "size", str(elf)], capture_output=True, text=True,
                          check=True).stdout.splitlines()[1].split()
    return int(line[0]) + int(line[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="cortex-m7")
    ap.add_argument("--out", default="build/exp_mnist")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", default="int8,exp3,exp4,exp5,exp6,pow2-4")
    ap.add_argument("--pairs", action="store_true", help="conv2d_expcb with channel pairs (faster, more code)")
    a = ap.parse_args()
    if a.pairs:  # a module constant is not in the kernel cache's key: a cache of its own for these builds
        import os

        from edgepack.codegen.kernels import conv2d_expcb
        conv2d_expcb.PAIRS = True
        os.environ["EDGEPACK_CACHE"] = str(Path(a.out).resolve() / "kernel-cache-pairs")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    board = get_board(a.board)
    formats = a.weights.split(",")

    xtr, ytr, xte, yte = mnist5k()
    t = time.time()
    torch.manual_seed(a.seed)  # the initial weights too
    model = train(ResidualCNN(), xtr, ytr, epochs=a.epochs, seed=a.seed, progress=False)
    acc_f = accuracy(float_logits(model, xte), yte)
    print(f"trained ResidualCNN in {time.time() - t:.0f} s: float test accuracy {100 * acc_f:.1f} %", flush=True)
    path = out / "mnist_cnn.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(xte[:1]),)), path)
    np.save(out / "calib.npy", xtr[::20])
    np.savez(out / "test.npz", x=xte, y=yte)

    rows = {}
    for w in formats:
        t = time.time()
        r = build(path, a.board, out / w, calib=out / "calib.npy", weights=w, eval_data=out / "test.npz")
        m = r["measured"]
        rows[w] = {"accuracy": m["built_accuracy"], "measured_on": m["built_accuracy_measured_on"],
                   "bit_exact": m["bit_exact"], "flash_text_data": elf_flash(out / w, board),
                   "report_flash_bytes": r["flash_bytes"], "instructions": m.get("instructions_per_inference"),
                   "weights_bytes": r["weights_bytes"],
                   "layers": [{k: l.get(k) for k in ("name", "op", "kernel", "weight_format", "weight_bytes",
                                                     "kernel_code_bytes", "instructions")} for l in r["layers"]]}
        print(f"{w}: {100 * m['built_accuracy']:.1f} % ({m['built_accuracy_measured_on']}), flash "
              f"{rows[w]['flash_text_data']}, {time.time() - t:.0f} s; {m['bit_exact']}", flush=True)

    ref = rows.get("int8")
    lines = [f"ResidualCNN on MNIST-5k (1,000 test digits), float {100 * acc_f:.1f} %, board {a.board}; accuracy from "
             f"{rows[formats[0]]['measured_on']}; flash = text + data of firmware.elf (size); first and last layer "
             "int8 in every build.", "",
             "| build | accuracy | flash (B) | instructions / inference | weight bytes | kernel code of the coded "
             "layers (B) | int8 kernels of the same layers (B) |", "|---|---|---|---|---|---|---|"]
    for w, row in rows.items():
        coded = [l for l in row["layers"] if l["weight_format"] and not l["weight_format"].startswith("int8")]
        kc = sum(l["kernel_code_bytes"] or 0 for l in coded) if coded else None
        k8 = None
        if ref and coded:
            by = {l["name"]: l for l in ref["layers"]}
            k8 = sum(by[l["name"]]["kernel_code_bytes"] or 0 for l in coded)
        ins = f"{row['instructions']:,.0f}" if row["instructions"] is not None else "-"
        fl = f"{row['flash_text_data']:,}" if row["flash_text_data"] is not None else "-"
        lines.append(f"| {w} | {100 * row['accuracy']:.1f} % | {fl} | {ins} | {row['weights_bytes']:,} | "
                     f"{kc if kc is not None else '-'} | {k8 if k8 is not None else '-'} |")
    if ref:
        lines += ["", "Accuracy goal (int8 activations, emulator outputs): exp4 within 1 point of int8, exp3 within 2."]
        for w, tol in (("exp4", 1.0), ("exp3", 2.0)):
            if w in rows:
                d = 100 * (ref["accuracy"] - rows[w]["accuracy"])
                lines.append(f"- {w}: {d:+.1f} points below int8 -> {'met' if d <= tol else 'NOT met'} "
                             f"(tolerance {tol:.0f})")
    text = "\n".join(lines)
    print("\n" + text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"float_accuracy": acc_f, "board": a.board, "builds": rows},
                                                 indent=1))
    print(f"\nwrote {out / 'table.md'} and {out / 'results.json'}")


if __name__ == "__main__":
    main()
