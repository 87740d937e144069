"""Instructions per inference of int8 layers and whole models on emulated Cortex-M boards, beside CMSIS-NN.

    python benchmarks/cortexm_layers.py [--board cortex-m4 cortex-m7 cortex-m33] [--plain]
        [--cmsis-nn DIR --cmsis-core DIR] [--models resnet8 dscnn mnist] [--model OUT ...] [--keep]

Layers mode (default): five single int8 layers (torch modules, conv with bias, no activation), each exported
with torch.export, built with edgepack.build.build for the board (int8, calibrated on a seeded standard-normal
batch of 16), run on 2 seeded random inputs on the emulator (QEMU -icount: instructions are exact, a proxy for
cycles). ``--models`` adds whole models (benchmarks/tiny_models.py: a ResNet-8-like and a DS-CNN-like model,
the MNIST example's CNN) and ``--model OUT`` any built output folder (its board, its calibration-free
measurement on 2 seeded inputs): per layer and total.

With ``--cmsis-nn DIR --cmsis-core DIR`` (a checkout of github ARM-software/CMSIS-NN and the CMSIS_6
CMSIS/Core/Include folder) the same models run through CMSIS-NN in the same run (benchmarks/cmsis_nn.py:
same layers, weights, multipliers, shifts and offsets, the board's flags, the same harness and counting), its
outputs are checked against edgepack's reference, and the table gives edgepack / CMSIS-NN. Without it, edgepack's
numbers alone. ``--plain`` also builds every model with the board's DSP features turned off (the plain
kernels, i.e. edgepack before the DSP schedules) for the before / after comparison.

Printed per layer: MACs, instructions (edgepack's kernel, CMSIS-NN's function; plain), ratio, MACs per
instruction, and the code bytes of the kernels (text symbols in the ELF: edgepack's ep_* kernels, CMSIS-NN's
arm_* functions). Exit status 1 if any output differs from the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "toolchain"), str(ROOT / "benchmarks")]

from edgepack.boards import get_board  # noqa: E402
from edgepack.build import build  # noqa: E402
from edgepack.report import WEIGHTED_OPS  # noqa: E402
from edgepack.runners import Model, reference, run  # noqa: E402

# name, description, module factory, input shape (model layout)
LAYERS = [
    ("L1", "conv 3x3 16x16x64->64 s1 p1", lambda: nn.Conv2d(64, 64, 3, stride=1, padding=1), (1, 64, 16, 16)),
    ("L2", "conv 3x3 32x32x16->16 s1 p1", lambda: nn.Conv2d(16, 16, 3, stride=1, padding=1), (1, 16, 32, 32)),
    ("L3", "conv 1x1 8x8x128->128", lambda: nn.Conv2d(128, 128, 1), (1, 128, 8, 8)),
    ("L4", "depthwise 3x3 16x16x64 p1", lambda: nn.Conv2d(64, 64, 3, padding=1, groups=64), (1, 64, 16, 16)),
    ("L5", "dense 1024->128", lambda: nn.Linear(1024, 128), (1, 1024)),
]
N_CALIB, N_INPUTS = 16, 2


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def kernel_code_bytes(out: Path) -> int:
    """Bytes of edgepack's kernel functions (ep_<op>_* text symbols) in OUT/firmware.elf."""
    from cmsis_nn import code_bytes

    board = json.loads((out / "board.json").read_text())
    kernels = set(json.loads((out / "report.json").read_text())["kernels"])
    return code_bytes(out / "firmware.elf", board, kernels)


def measure(work: Path, board: str, key: str, make, shape, seed: int) -> dict:
    """Build one torch model for ``board`` (calibrated on a seeded standard-normal batch), run N_INPUTS seeded
    inputs on the emulator and the host. Also keeps the output folder and the inputs for CMSIS-NN."""
    torch.manual_seed(seed)
    m = make().eval()
    path = work / f"{key}.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(shape),)), path)
    rng = np.random.default_rng(seed)
    np.save(work / f"{key}-calib.npy", rng.standard_normal((N_CALIB,) + shape[1:]).astype(np.float32))
    out = work / f"out-{key}-{board}"
    t = time.time()
    rep = build(path, board, out, calib=work / f"{key}-calib.npy")
    build_s = time.time() - t
    x = rng.standard_normal((N_INPUTS,) + shape[1:]).astype(np.float32)
    r = measure_out(out, x)
    r.update(build_s=build_s, flash_bytes=rep["flash_bytes"], macs=rep["macs"])
    return r


def measure_out(out: Path, x: np.ndarray) -> dict:
    """Run a built OUT on ``x`` (float, model layout) on the emulator, host and reference."""
    stats = {}
    t = time.time()
    _, raw_emu = run(out, x, on="emulator", stats=stats)
    emu_s = time.time() - t
    _, raw_host = run(out, x, on="host")
    _, raw_ref = run(out, x, on="reference")
    rep = json.loads((out / "report.json").read_text())
    layers = rep["layers"]
    weighted = [i for i, l in enumerate(layers) if l["op"] in WEIGHTED_OPS]
    ins = stats["instructions"]
    per_layer = stats["layer_instructions"]
    return {
        "out": out, "x": x, "instructions": int(np.rint(ins.mean())), "min": int(ins.min()), "max": int(ins.max()),
        "layer_instructions": int(np.rint(per_layer[:, weighted].sum(axis=1).mean())) if weighted else 0,
        "layers": len(layers), "ops": [l["op"] for l in layers], "names": [l["name"] for l in layers],
        "schedules": [l.get("schedule", "plain") for l in layers], "layer_macs": [l["macs"] for l in layers],
        "flash_bytes": rep["flash_bytes"], "weight_bytes": sum(layers[i]["weight_bytes"] for i in weighted),
        "macs": rep["macs"], "arena_bytes": rep["arena_bytes"], "scratch_bytes": rep.get("largest_scratch_bytes", 0),
        "tensor_bound_bytes": rep.get("tensor_liveness_bound_bytes") or rep["liveness_bound_bytes"],
        "bit_exact": bool(np.array_equal(raw_emu, raw_host) and np.array_equal(raw_emu, raw_ref)),
        "emu_s": emu_s, "per_layer_mean": per_layer.mean(axis=0), "layer_weight_bytes": [l["weight_bytes"] for l in layers],
        "kernel_code_bytes": kernel_code_bytes(out), "raw_ref": raw_ref,
    }


def plain_board(board: str, work: Path) -> str:
    """A copy of ``board`` without its features (the plain kernels), as a board file on EDGEPACK_BOARDS_PATH."""
    import tomllib

    d = work / "boards"
    d.mkdir(exist_ok=True)
    src = Path(get_board(board)["file"])
    lines = [ln for ln in src.read_text().splitlines() if not ln.startswith("features")]
    name = f"{board}-plain"
    lines = [f'name = "{name}"' if ln.startswith("name") else ln for ln in lines]
    (d / f"{name}.toml").write_text("\n".join(lines) + "\n")
    tomllib.loads((d / f"{name}.toml").read_text())
    paths = [p for p in os.environ.get("EDGEPACK_BOARDS_PATH", "").split(os.pathsep) if p]
    if str(d) not in paths:
        os.environ["EDGEPACK_BOARDS_PATH"] = os.pathsep.join(paths + [str(d)])
    return name


def with_cmsis(r: dict, a, work: Path) -> dict:
    if not a.cmsis_nn:
        return r
    import cmsis_nn

    m = Model(r["out"])
    xq = m.quantize_input(r["x"])
    c = cmsis_nn.run(r["out"], xq, a.cmsis_nn, a.cmsis_core, work)
    raw = m.raw_to_model_layout(c["raw"])
    r["cmsis"] = {"instructions": int(np.rint(c["instructions"].mean())),
                  "per_layer": c["layer_instructions"].mean(axis=0), "is_cmsis": c["is_cmsis"],
                  "code_bytes": c["code_bytes"], "equal_reference": bool(np.array_equal(raw, r["raw_ref"])),
                  "differ": int((raw != r["raw_ref"]).sum())}
    return r


def fmt_ratio(a, b):
    return f"{a / b:5.2f}x" if b else "    -"


def print_layers(board, rows, a):
    cm = bool(a.cmsis_nn)
    print(f"\nint8 single layers on {board} (QEMU -icount: instructions per inference, mean of {N_INPUTS} inputs)")
    head = (f"{'layer':5s} {'shape':29s} {'MACs':>9s} {'edgepack':>11s}" + (f" {'CMSIS-NN':>11s} {'ratio':>6s}" if cm else "")
            + (f" {'plain':>11s}" if a.plain else "") + f" {'MAC/instr':>9s}" + (f" {'CMSIS':>6s}" if cm else "")
            + f" {'code B':>7s}" + (f" {'CMSIS B':>7s}" if cm else "") + (f" {'plain B':>7s}" if a.plain else "")
            + f" {'bit-exact':>9s}")
    print(head)
    print("-" * len(head))
    for key, desc, r in rows:
        k = r["layer_instructions"]
        line = f"{key:5s} {desc:29s} {r['macs']:9d} {k:11,d}"
        if cm:
            c = r["cmsis"]
            ck = int(np.rint(sum(v for v, ok in zip(c["per_layer"], c["is_cmsis"]) if ok)))
            line += f" {ck:11,d} {fmt_ratio(k, ck)}"
        if a.plain:
            line += f" {r['plain']['layer_instructions']:11,d}"
        line += f" {r['macs'] / k:9.3f}"
        if cm:
            line += f" {r['macs'] / ck:6.3f}"
        line += f" {r['kernel_code_bytes']:7d}"
        if cm:
            line += f" {r['cmsis']['code_bytes']:7d}"
        if a.plain:
            line += f" {r['plain']['kernel_code_bytes']:7d}"
        ok = r["bit_exact"] and (not cm or r["cmsis"]["equal_reference"])
        line += f" {'yes' if ok else 'NO':>9s}"
        print(line)
    print("edgepack: the layer's kernel (per-layer SysTick count); CMSIS-NN: its function on the same layer; ratio: "
          "edgepack / CMSIS-NN; plain: edgepack with the board's DSP features off (the kernels before the DSP "
          "schedules); code B: kernel code bytes in the ELF; bit-exact: edgepack emulator == host == reference"
          + (" and CMSIS-NN == reference" if cm else ""))


def print_model(board, name, r, a):
    cm = bool(a.cmsis_nn)
    print(f"\nmodel {name} on {board}: {r['macs']:,} MACs, {len(r['ops'])} layers, arena {r['arena_bytes']} B "
          f"(tensors' liveness bound {r['tensor_bound_bytes']} B + largest scratch {r['scratch_bytes']} B), flash "
          f"{r['flash_bytes']} B" + (f" (plain {r['plain']['flash_bytes']} B, arena {r['plain']['arena_bytes']} B)"
                                     if a.plain else ""))
    head = (f"{'#':>2s} {'layer':24s} {'op':12s} {'sched':5s} {'MACs':>9s} {'edgepack':>11s}"
            + (f" {'CMSIS-NN':>11s} {'ratio':>6s}" if cm else "") + (f" {'plain':>11s}" if a.plain else "")
            + f" {'MAC/instr':>9s}")
    print(head)
    print("-" * len(head))
    tot_e = tot_c = tot_p = 0
    for i, (ln, op) in enumerate(zip(r["names"], r["ops"])):
        e = float(r["per_layer_mean"][i])
        line = f"{i:2d} {ln[:24]:24s} {op:12s} {r['schedules'][i][:5]:5s} {r['layer_macs'][i]:9d} {e:11,.0f}"
        if cm:
            ok = r["cmsis"]["is_cmsis"][i]
            c = float(r["cmsis"]["per_layer"][i])
            line += f" {c:11,.0f} {fmt_ratio(e, c)}" if ok else f" {'(edgepack)':>11s} {'':6s}"
            if ok:
                tot_e, tot_c = tot_e + e, tot_c + c
        if a.plain:
            p = float(r["plain"]["per_layer_mean"][i])
            tot_p += p
            line += f" {p:11,.0f}"
        line += f" {r['layer_macs'][i] / e:9.3f}" if r["layer_macs"][i] else f" {'':9s}"
        print(line)
    print(f"whole ep_model_run: edgepack {r['instructions']:,}" + (f", plain {r['plain']['instructions']:,}" if a.plain else "")
          + (f", CMSIS-NN {r['cmsis']['instructions']:,}" if cm else "")
          + f"; kernel code {r['kernel_code_bytes']} B" + (f" (plain {r['plain']['kernel_code_bytes']} B)" if a.plain else "")
          + (f", CMSIS-NN code {r['cmsis']['code_bytes']} B" if cm else ""))
    if cm:
        print(f"layer sum over the layers CMSIS-NN runs: edgepack {tot_e:,.0f} / CMSIS-NN {tot_c:,.0f} = "
              f"{tot_e / tot_c:.3f}x; CMSIS-NN outputs == reference: {r['cmsis']['equal_reference']} "
              f"({r['cmsis']['differ']} differ)")
    print(f"bit-exact (edgepack emulator == host == reference): {r['bit_exact']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", nargs="+", default=["cortex-m7"], help="emulated Cortex-M boards (default cortex-m7)")
    ap.add_argument("--cmsis-nn", type=Path, help="a CMSIS-NN checkout (github ARM-software/CMSIS-NN)")
    ap.add_argument("--cmsis-core", type=Path, help="CMSIS_6's CMSIS/Core/Include folder")
    ap.add_argument("--plain", action="store_true", help="also measure the plain kernels (board features off)")
    ap.add_argument("--models", nargs="*", default=[], help="whole models of benchmarks/tiny_models.py")
    ap.add_argument("--model", nargs="*", type=Path, default=[], help="built output folders (whole-model mode)")
    ap.add_argument("--no-layers", action="store_true", help="skip the five single layers")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (models and outputs)")
    a = ap.parse_args(argv)
    if bool(a.cmsis_nn) != bool(a.cmsis_core):
        ap.error("--cmsis-nn and --cmsis-core go together")
    from tiny_models import MODELS

    work = Path(tempfile.mkdtemp(prefix="ep-layers-"))
    ok = True
    try:
        for board in a.board:
            rows = []
            if not a.no_layers:
                for i, (key, desc, make, shape) in enumerate(LAYERS):
                    log(f"[{board} {i + 1}/{len(LAYERS)}] {key} {desc} ...")
                    r = with_cmsis(measure(work, board, key, make, shape, seed=i), a, work)
                    if a.plain:
                        r["plain"] = measure(work, plain_board(board, work), key, make, shape, seed=i)
                    rows.append((key, desc, r))
                    ok &= r["bit_exact"] and (not a.cmsis_nn or r["cmsis"]["equal_reference"])
                print_layers(board, rows, a)
            for name in a.models:
                log(f"[{board}] model {name} ...")
                m = MODELS[name]()
                r = with_cmsis(measure(work, board, name, lambda: m, m.input_shape, seed=11), a, work)
                if a.plain:
                    r["plain"] = measure(work, plain_board(board, work), name, lambda: m, m.input_shape, seed=11)
                print_model(board, name, r, a)
                ok &= r["bit_exact"] and (not a.cmsis_nn or r["cmsis"]["equal_reference"])
        for out in a.model:
            m = Model(out)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((N_INPUTS,) + tuple(m.input_shape[1:])).astype(np.float32)
            r = with_cmsis(measure_out(out, x), a, work)
            print_model(json.loads((out / "board.json").read_text())["name"], str(out), r,
                        argparse.Namespace(**dict(vars(a), plain=False)))
            ok &= r["bit_exact"] and (not a.cmsis_nn or r["cmsis"]["equal_reference"])
        if not a.cmsis_nn:
            print("\nCMSIS-NN: not run; pass --cmsis-nn DIR --cmsis-core DIR (a checkout of github "
                  "ARM-software/CMSIS-NN and CMSIS_6's CMSIS/Core/Include) to measure it beside edgepack")
    finally:
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
