"""Instructions per inference of five single int8 layers on an emulated Cortex-M, beside CMSIS-NN's counts.

    python benchmarks/cortexm_layers.py [--board cortex-m7] [--keep]

Each layer is a torch module (conv with bias, no activation), exported with torch.export to a .pt2 in a
temporary folder, built with edgepack.build.build for the board (int8, calibrated on a seeded standard-normal
batch of 16), and run on 2 seeded random inputs on the emulator (QEMU, -icount: instructions are exact,
a proxy for cycles). Printed per layer: instructions per inference (the whole ep_model_run, and the layer's
own kernel), CMSIS-NN's reference count and the ratio (edgepack / CMSIS-NN, total), the firmware's flash
bytes (report.json flash_bytes, harness included), the layer's int8 weight bytes, and whether the
emulator's raw int8 outputs equal the host's (the same C through cffi) bit for bit. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "toolchain")]

from edgepack.build import build  # noqa: E402
from edgepack.report import WEIGHTED_OPS  # noqa: E402
from edgepack.runners import run  # noqa: E402

# name, description, module factory, input shape (model layout), CMSIS-NN instructions per inference
LAYERS = [
    ("L1", "conv 3x3 16x16x64->64 s1 p1", lambda: nn.Conv2d(64, 64, 3, stride=1, padding=1), (1, 64, 16, 16),
     16.6e6),
    ("L2", "conv 3x3 32x32x16->16 s1 p1", lambda: nn.Conv2d(16, 16, 3, stride=1, padding=1), (1, 16, 32, 32),
     5.5e6),
    ("L3", "conv 1x1 8x8x128->128", lambda: nn.Conv2d(128, 128, 1), (1, 128, 8, 8), 1.84e6),
    ("L4", "depthwise 3x3 16x16x64 p1", lambda: nn.Conv2d(64, 64, 3, padding=1, groups=64), (1, 64, 16, 16),
     1.25e6),
    ("L5", "dense 1024->128", lambda: nn.Linear(1024, 128), (1, 1024), 0.25e6),
]
N_CALIB, N_INPUTS = 16, 2


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def measure(work: Path, board: str, key: str, make, shape, seed: int) -> dict:
    torch.manual_seed(seed)
    m = make().eval()
    path = work / f"{key}.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(shape),)), path)
    rng = np.random.default_rng(seed)
    np.save(work / f"{key}-calib.npy", rng.standard_normal((N_CALIB,) + shape[1:]).astype(np.float32))
    out = work / f"out-{key}"
    t = time.time()
    rep = build(path, board, out, calib=work / f"{key}-calib.npy")
    build_s = time.time() - t
    x = rng.standard_normal((N_INPUTS,) + shape[1:]).astype(np.float32)
    stats = {}
    t = time.time()
    _, raw_emu = run(out, x, on="emulator", stats=stats)
    emu_s = time.time() - t
    _, raw_host = run(out, x, on="host")
    layers = json.loads((out / "report.json").read_text())["layers"]
    weighted = [i for i, l in enumerate(layers) if l["op"] in WEIGHTED_OPS]
    ins = stats["instructions"]
    per_layer = stats["layer_instructions"]
    return {
        "instructions": int(np.rint(ins.mean())), "min": int(ins.min()), "max": int(ins.max()),
        "layer_instructions": int(np.rint(per_layer[:, weighted].sum(axis=1).mean())) if weighted else 0,
        "layers": len(layers), "ops": [l["op"] for l in layers],
        "flash_bytes": rep["flash_bytes"], "weight_bytes": sum(layers[i]["weight_bytes"] for i in weighted),
        "macs": rep["macs"], "bit_exact": bool(raw_emu.shape == raw_host.shape and np.array_equal(raw_emu, raw_host)),
        "build_s": build_s, "emu_s": emu_s,
        "per_layer_mean": per_layer.mean(axis=0), "layer_weight_bytes": [l["weight_bytes"] for l in layers],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="cortex-m7", help="an emulated Cortex-M board (default cortex-m7)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (models and outputs)")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ep-layers-"))
    rows = []
    try:
        for i, (key, desc, make, shape, ref) in enumerate(LAYERS):
            log(f"[{i + 1}/{len(LAYERS)}] {key} {desc}: build for {a.board}, run {N_INPUTS} inputs on the "
                "emulator and the host ...")
            r = measure(work, a.board, key, make, shape, seed=i)
            log(f"      {r['instructions']} instructions, build {r['build_s']:.1f} s, emulator {r['emu_s']:.1f} s, "
                f"ops {' '.join(r['ops'])}")
            rows.append((key, desc, ref, r))
    finally:
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"int8 single layers on {a.board} (QEMU -icount: instructions per inference, mean of {N_INPUTS} "
          "inputs; CMSIS-NN: reference counts)")
    head = (f"{'layer':5s} {'shape':29s} {'MACs':>9s} {'edgepack':>11s} {'kernel':>11s} {'CMSIS-NN':>10s} "
            f"{'ratio':>6s} {'instr/MAC':>9s} {'flash B':>8s} {'weight B':>8s} {'bit-exact':>9s}")
    print(head)
    print("-" * len(head))
    for key, desc, ref, r in rows:
        print(f"{key:5s} {desc:29s} {r['macs']:9d} {r['instructions']:11,d} {r['layer_instructions']:11,d} "
              f"{ref / 1e6:9.2f}M {r['instructions'] / ref:5.2f}x {r['instructions'] / r['macs']:9.2f} "
              f"{r['flash_bytes']:8d} {r['weight_bytes']:8d} {'yes' if r['bit_exact'] else 'NO':>9s}")
    print("edgepack: whole ep_model_run; kernel: the layer's own kernel; ratio: edgepack / CMSIS-NN; "
          "flash: the whole firmware (harness included); bit-exact: emulator raw int8 == host raw int8")
    spread = [f"{k} {r['min']:,}..{r['max']:,}" for k, _, _, r in rows if r["min"] != r["max"]]
    if spread:
        print("counts depend on the data (saturation / rounding paths); min..max over the inputs: "
              + "; ".join(spread))
    return 0 if all(r["bit_exact"] for *_, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
