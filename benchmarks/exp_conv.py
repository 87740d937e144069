"""Instructions per inference of a 3x3 conv 16x16x64 -> 16x16x64 (pad 1) with exp4 weights on an emulated
Cortex-M, both kernel strategies, beside the int8 kernel of the same layer and CMSIS-NN's count.

    python benchmarks/exp_conv.py [--board cortex-m7] [--keep]

Each variant is a single-layer integer graph (edgepack.graph.Graph, as in tests/test_exp_kernels.py) built
with edgepack.build.emit for the board: exp4 codes drawn like a discretized Gaussian layer (magnitude index m
with probability ~ 2^-m, random signs, 6% zeros, top 6: weights +-1..+-64), the int8 layer with int8 weights
of a similar spread; per-channel multipliers chosen from the accumulators of a calibration input so that the
outputs span the int8 range (realistic requantization, few saturated outputs). Two seeded random inputs run
on the emulator (QEMU -icount: instructions are exact). Printed per variant: instructions per inference (the
whole ep_model_run and the layer's kernel), the ratio to CMSIS-NN's arm_convolve_s8 (16.6M on this layer),
the weight bytes (exp4 codes vs int8), the firmware's flash bytes (from firmware.elf), the kernel's code
bytes (nm), and whether the emulator's outputs equal reference.ops_exp / reference.ops bit for bit.

Variants: exp4 "mul" (decode then multiply: two output channels packed per 32-bit weight word, one 32x32->64
multiply-accumulate for both, the default), exp4 "mul, no pairs" (one int32 MLA per product), exp4 "shift"
(shift and add), int8 (conv2d_s8). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "toolchain")]

from edgepack.boards import get_board  # noqa: E402
from edgepack.build import emit  # noqa: E402
from edgepack.codegen.kernels import conv2d_exp  # noqa: E402
from edgepack.graph import Graph, QParams  # noqa: E402
from edgepack.pack import expcodes  # noqa: E402
from edgepack.reference.arith import quantize_multiplier  # noqa: E402
from edgepack.runners import Model, emulator, reference  # noqa: E402

H = W = 16
C = O = 64
KH = KW = 3
BITS, TOP = 4, 6
CMSIS_NN = 16.6e6  # arm_convolve_s8 instructions on this layer (benchmarks/cortexm_layers.py, L1)
N_INPUTS = 2
CONV = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def exp_codes(rng) -> np.ndarray:
    """(O, KH, KW, C) codes: m = 1..7 with probability ~ 2^-m (m = 1 the largest weight), 6% zeros."""
    levels = (1 << (BITS - 1)) - 1
    p = 2.0 ** -np.arange(1, levels + 1)
    m = rng.choice(np.arange(1, levels + 1), size=(O, KH, KW, C), p=p / p.sum())
    m[rng.random(m.shape) < 0.06] = 0
    m[:, 0, 0, 0] = 1  # every channel uses the top exponent
    return m | (rng.integers(0, 2, m.shape) << (BITS - 1))


def accumulators(x, zp, w, bias) -> np.ndarray:
    """(H, W, O) int32 accumulators of the pad-1 3x3 conv: bias + sum (x - zp) * w (padding adds 0)."""
    xp = np.zeros((H + 2, W + 2, C), np.int64)
    xp[1:-1, 1:-1] = np.asarray(x, np.int64)[0] - zp
    w = np.asarray(w, np.int64)
    return bias + sum(xp[ky:ky + H, kx:kx + W] @ w[:, ky, kx, :].T for ky in range(KH) for kx in range(KW))


def multipliers(acc: np.ndarray):
    """Per-channel multipliers mapping +-3 std of the accumulators to +-127."""
    std = acc.reshape(-1, acc.shape[-1]).std(axis=0) + 1.0
    ms = [quantize_multiplier(float(127.0 / (3.0 * s))) for s in std]
    return np.array([m for m, _ in ms], np.int32), np.array([s for _, s in ms], np.int32)


def layer(kind: str, seed: int = 0, strategy: str = "mul", pairs: bool = True) -> Graph:
    rng = np.random.default_rng(seed)
    iq, oq = QParams(0.05, -7), QParams(0.08, 3)
    bias = rng.integers(-2000, 2000, O).astype(np.int32)
    calib = rng.integers(-128, 128, (1, H, W, C)).astype(np.int8)
    g = Graph()
    g.add_tensor("x", (1, H, W, C), "int8", quant=iq)
    g.add_tensor("y", (1, H, W, O), "int8", quant=oq)
    base = dict(CONV, in_zp=iq.zero_point, out_zp=oq.zero_point, act_min=-128, act_max=127)
    if kind == "exp4":
        codes = exp_codes(rng)
        w = expcodes.decode(codes, BITS, TOP)
        assert expcodes.accumulator_bound(w, bias) < 2**31
        m, s = multipliers(accumulators(calib, iq.zero_point, w, bias))
        attrs = dict(base, bits=BITS, top=TOP, wshape=(O, KH, KW, C), exp_strategy=strategy, exp_pairs=pairs)
        g.add_const("w", expcodes.pack(codes, BITS))
        op = "conv2d_exp"
    else:
        w = np.clip(np.round(rng.standard_normal((O, KH, KW, C)) * 40), -127, 127).astype(np.int8)
        m, s = multipliers(accumulators(calib, iq.zero_point, w, bias))
        attrs = base
        g.add_const("w", w)
        op = "conv2d_s8"
    g.add_const("bias", bias)
    g.add_const("mult", m)
    g.add_const("shift", s)
    g.add_node(op, "layer", ["x", "w", "bias", "mult", "shift"], ["y"], **attrs)
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def kernel_bytes(folder: Path, board: dict) -> int:
    nm = board.get("toolchain_prefix", "") + "nm"
    r = subprocess.run([nm, "-S", str(folder / "firmware.elf")], capture_output=True, text=True)
    return sum(int(p[1], 16) for p in (ln.split() for ln in r.stdout.splitlines())
               if len(p) == 4 and p[3].startswith(("ep_conv2d_exp_", "ep_conv2d_s8_")))


def measure(work: Path, board: dict, key: str, g: Graph) -> dict:
    folder = work / key
    t = time.time()
    _, _, elf = emit(g, board, folder, f"benchmarks/exp_conv.py ({key})")
    build_s = time.time() - t
    m = Model(folder)
    x = np.random.default_rng(123).integers(-128, 128, (N_INPUTS, H, W, C)).astype(np.int8)
    counts = {}
    t = time.time()
    got = emulator.run_raw(m, x, counts_out=counts)
    emu_s = time.time() - t
    want = reference.run_raw(m, x)
    n = g.nodes[0]
    wbytes = int(g.tensors[n.inputs[1]].data.nbytes)
    ins, lay = counts["instructions"], counts["layer_instructions"]
    return {"instructions": int(np.rint(ins.mean())), "layer": int(np.rint(lay[:, 0].mean())),
            "min": int(ins.min()), "max": int(ins.max()), "weight_bytes": wbytes,
            "flash_bytes": elf["flash_bytes"], "kernel_bytes": kernel_bytes(folder, board),
            "bit_exact": bool(np.array_equal(got, want)), "saturated": float(np.mean(np.abs(want.astype(int)) >= 127)),
            "build_s": build_s, "emu_s": emu_s,
            "plan": conv2d_exp.plan(n.attrs, {"x": (1, H, W, C)}) if n.op == "conv2d_exp" else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="cortex-m7", help="an emulated Cortex-M board (default cortex-m7)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (the built layers)")
    a = ap.parse_args(argv)
    board = get_board(a.board)
    variants = [
        ("exp4-mul", "exp4, decode + multiply (packed pairs, SMLAL)", layer("exp4", strategy="mul")),
        ("exp4-mla", "exp4, decode + multiply (no pairs, MLA)", layer("exp4", strategy="mul", pairs=False)),
        ("exp4-shift", "exp4, shift and add", layer("exp4", strategy="shift")),
        ("int8", "int8 (conv2d_s8)", layer("int8")),
    ]
    work = Path(tempfile.mkdtemp(prefix="ep-expconv-"))
    rows = []
    try:
        for i, (key, desc, g) in enumerate(variants):
            log(f"[{i + 1}/{len(variants)}] {desc}: build for {a.board}, run {N_INPUTS} inputs on the emulator ...")
            r = measure(work, board, key, g)
            log(f"      {r['instructions']:,} instructions, build {r['build_s']:.1f} s, emulator {r['emu_s']:.1f} s"
                + (f", plan {r['plan']}" if r["plan"] else ""))
            rows.append((key, desc, r))
    finally:
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    macs = H * W * O * KH * KW * C
    print(f"conv 3x3 {H}x{W}x{C} -> {H}x{W}x{O} pad 1 ({macs:,} MACs) on {a.board} (QEMU -icount: instructions per "
          f"inference, mean of {N_INPUTS} inputs; CMSIS-NN arm_convolve_s8: {CMSIS_NN / 1e6:.1f}M)")
    head = (f"{'variant':45s} {'instructions':>12s} {'kernel':>12s} {'vs CMSIS':>8s} {'instr/MAC':>9s} "
            f"{'weight B':>8s} {'flash B':>8s} {'code B':>7s} {'bit-exact':>9s}")
    print(head)
    print("-" * len(head))
    for key, desc, r in rows:
        print(f"{desc:45s} {r['instructions']:12,d} {r['layer']:12,d} {r['instructions'] / CMSIS_NN:7.2f}x "
              f"{r['instructions'] / macs:9.2f} {r['weight_bytes']:8d} {r['flash_bytes']:8d} {r['kernel_bytes']:7d} "
              f"{'yes' if r['bit_exact'] else 'NO':>9s}")
    print(f"{'CMSIS-NN arm_convolve_s8 (reference count)':45s} {int(CMSIS_NN):12,d} {'':12s} {1.0:7.2f}x "
          f"{CMSIS_NN / macs:9.2f}")
    print("instructions: whole ep_model_run; kernel: the layer's kernel alone; weight B: the layer's weight tensor "
          "(exp4 codes, 4 bits each, vs int8); flash B: firmware.elf (harness included); code B: the kernel "
          "function's machine code; bit-exact: emulator == reference.ops_exp / reference.ops")
    spread = [f"{k} {r['min']:,}..{r['max']:,}" for k, _, r in rows if r["min"] != r["max"]]
    if spread:
        print("counts depend on the data; min..max over the inputs: " + "; ".join(spread))
    return 0 if all(r["bit_exact"] for *_, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
