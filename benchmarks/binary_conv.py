"""Instructions per inference of a binary 3x3 conv 16x16x64->64 on an emulated Cortex-M, beside the int8 conv.

    python benchmarks/binary_conv.py [--board cortex-m7] [--keep]

Two single-layer models of the same shape (input (1, 64, 16, 16), 64 output channels, 3x3, stride 1, pad 1,
with bias), each exported with torch.export to a .pt2 in a temporary folder, built with edgepack.build.build for
the board (calibrated on a seeded standard-normal batch of 16) and run on 2 seeded random inputs on the emulator
(QEMU, -icount: instructions are exact, a proxy for cycles) and on the host:

  binary: conv2d(sign(x), W) with W in {+a_o, -a_o} per output channel. edgepack makes it a binarize_s8 layer
          (int8 -> packed bits) and an XNOR-popcount bconv2d_b1_s8 layer (int8 out); both counted apart.
  int8:   nn.Conv2d(64, 64, 3, padding=1), the int8 conv2d_s8 kernel (benchmarks/cortexm_layers.py's L1).

Printed: instructions per inference (kernel, binarize, whole ep_model_run), the ratio int8 / binary of the conv
kernels, weight bytes (int8 vs packed binary), the firmware's flash bytes (report.json flash_bytes, harness
included) and whether the emulator's raw outputs equal the host's bit for bit; and, for scale, two reference
counts for this layer: CMSIS-NN arm_convolve_s8 (int8, ~16.6M) and a careful plain-C binary kernel (carry-save-adder
popcount over several words, 32 channels per word, ~3.05M). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "toolchain"), str(ROOT / "benchmarks")]

from cortexm_layers import N_INPUTS, log  # noqa: E402
from cortexm_layers import measure as layers_measure  # noqa: E402

SHAPE = (1, 64, 16, 16)
CMSIS_NN_INT8 = 16.6e6  # arm_convolve_s8 on this layer
PLAIN_C_BINARY = 3.05e6  # plain-C XNOR-popcount (carry-save adder over several words, 32 channels per word)


class BinaryConv(nn.Module):
    """conv2d(sign(x), W) + bias, W = +-a_o per output channel (a binary conv with a per-channel scale)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 64, 3, padding=1)
        with torch.no_grad():
            w = self.conv.weight
            a = w.abs().mean(dim=(1, 2, 3), keepdim=True)
            w.copy_(torch.where(w >= 0, 1.0, -1.0) * a)

    def forward(self, x):
        return self.conv(torch.sign(x))


MODELS = [
    ("binary", "bconv 3x3 16x16x64->64 s1 p1", BinaryConv, ("bconv2d_b1_s8", "bconv2d_b1")),
    ("int8", "conv 3x3 16x16x64->64 s1 p1", lambda: nn.Conv2d(64, 64, 3, padding=1), ("conv2d_s8",)),
]




def measure(work: Path, board: str, key: str, make, kernel_ops, seed: int) -> dict:
    """cortexm_layers.measure, plus the instructions of the layer's own kernel and of the binarize step."""
    r = layers_measure(work, board, key, make, SHAPE, seed)
    ops, per_layer = r["ops"], r["per_layer_mean"]
    kern = [i for i, op in enumerate(ops) if op in kernel_ops]
    if len(kern) != 1:
        raise RuntimeError(f"{key}: expected one {'/'.join(kernel_ops)} layer, the model has {ops}")
    k = kern[0]
    binarize = [i for i, op in enumerate(ops) if op == "binarize_s8"]
    return dict(r, kernel=int(np.rint(per_layer[k])), kernel_op=ops[k],
                binarize=int(np.rint(per_layer[binarize].sum())) if binarize else 0,
                weight_bytes=r["layer_weight_bytes"][k])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="cortex-m7", help="an emulated Cortex-M board (default cortex-m7)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (models and outputs)")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ep-binary-"))
    res = {}
    try:
        for i, (key, desc, make, kernel_ops) in enumerate(MODELS):
            log(f"[{i + 1}/{len(MODELS)}] {key} {desc}: build for {a.board}, run {N_INPUTS} inputs on the emulator "
                "and the host ...")
            r = measure(work, a.board, key, make, kernel_ops, seed=i)
            log(f"      {r['instructions']:,} instructions, build {r['build_s']:.1f} s, emulator {r['emu_s']:.1f} s, "
                f"ops {' '.join(r['ops'])}")
            res[key] = (desc, r)
    finally:
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    b, q = res["binary"][1], res["int8"][1]
    print(f"binary vs int8 conv 3x3 16x16x64->64 (pad 1, stride 1) on {a.board} (QEMU -icount: instructions per "
          f"inference, mean of {N_INPUTS} inputs)")
    head = (f"{'model':7s} {'kernel op':14s} {'kernel':>11s} {'binarize':>9s} {'total':>11s} {'instr/MAC':>9s} "
            f"{'weight B':>8s} {'flash B':>8s} {'bit-exact':>9s}")
    print(head)
    print("-" * len(head))
    for key in ("binary", "int8"):
        r = res[key][1]
        print(f"{key:7s} {r['kernel_op']:14s} {r['kernel']:11,d} {r['binarize']:9,d} {r['instructions']:11,d} "
              f"{r['kernel'] / r['macs']:9.3f} {r['weight_bytes']:8d} {r['flash_bytes']:8d} "
              f"{'yes' if r['bit_exact'] else 'NO':>9s}")
    print(f"ratio int8 / binary: kernel {q['kernel'] / b['kernel']:.2f}x, whole model "
          f"{q['instructions'] / b['instructions']:.2f}x; weights {q['weight_bytes']} B int8 vs "
          f"{b['weight_bytes']} B packed binary ({q['weight_bytes'] / b['weight_bytes']:.1f}x smaller)")
    print(f"reference counts for this layer: CMSIS-NN arm_convolve_s8 (int8) {CMSIS_NN_INT8 / 1e6:.2f}M "
          f"(edgepack int8 kernel {q['kernel'] / CMSIS_NN_INT8:.2f}x of it); plain-C binary (CSA popcount) "
          f"{PLAIN_C_BINARY / 1e6:.2f}M (edgepack binary kernel {b['kernel'] / PLAIN_C_BINARY:.2f}x of it)")
    print("kernel: the conv layer's own kernel; binarize: the binarize_s8 layer (int8 -> packed bits); total: the "
          "whole ep_model_run; flash: the whole firmware (harness included); bit-exact: emulator raw == host raw")
    return 0 if all(r["bit_exact"] for _, r in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
