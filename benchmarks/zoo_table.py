"""The zoo table of issue 14's closing note: every model of tests/zoo/ through both frontends, beside PyTorch's
own int8 post-training quantization, and on the cortex-m7 emulator where it fits.

    python benchmarks/zoo_table.py [--models mobilenetv3_small,unet] [--board cortex-m7] [--keep]

Per model and frontend (.pt2 from torch.export, .onnx from the dynamo exporter), with tests/zoo/harness.py (the
code tests/test_zoo.py asserts on; 32 seeded calibration inputs, 32 held-out ones):

* build: the host build succeeds; bit-exact: reference == host on the 32 held-out inputs;
* rel RMS: sqrt(mean((y - y_float)^2) / mean(y_float^2)) of the dequantized host output against the float model,
  and in brackets the same error against the input-dependent part of the float output (y_float minus its mean
  over the inputs; a model that ignored its input would score 1 or more);
* torch PTQ: the same two numbers for PyTorch's int8 PTQ of the same model with the same calibration batch
  (torch.ao.quantization.quantize_fx prepare_fx / convert_fx, per-channel symmetric int8 weights and per-tensor
  affine 8-bit activations, both MinMaxObserver like edgepack's min-max calibration), run on the same 32 inputs
  with the qnnpack engine. fbgemm runs too, but on this AVX2 CPU without reduce_range (which would halve the
  activation range edgepack uses) its 16-bit pairwise sums saturate: 21 % on MobileNetV3-Small, 25 % on
  ShuffleNetV2. Where FX cannot trace or quantize the model the reason is printed, and where it leaves layers in
  float (PyTorch has no static int8 LSTM / GRU module) they are named. FX refuses per-channel weights for
  ConvTranspose2d; those models are quantized again with per-tensor weights for that layer type, and say so;
* flash: the host build's code + constants; arena / bound: the arena against the tensors' liveness bound;
* on the board (``--board``, cortex-m7 by default): whether the build fits the board's flash and RAM (the build
  refuses a model that does not, with the numbers), flash and RAM used; where it fits, 4 of the held-out inputs
  on the emulator, compared bit for bit with the reference, and the instructions per inference (QEMU -icount,
  mean of the 4).

Progress goes to stderr, the markdown table to stdout. Exit status 1 if a build fails or a target disagrees.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "toolchain"), str(ROOT / "tests")]

from edgepack.boards import get_board  # noqa: E402
from edgepack.build import build  # noqa: E402
from edgepack.errors import EdgepackError  # noqa: E402
from edgepack.runners import run  # noqa: E402
from zoo import MODELS  # noqa: E402
from zoo.harness import FORMATS, batches, check, float_outputs, relative_rms  # noqa: E402

N_EMULATOR = 4
T0 = time.time()


def log(msg: str):
    print(f"[{time.time() - T0:6.0f} s] {msg}", file=sys.stderr, flush=True)


def reason(e: BaseException) -> str:
    """One short line for a table cell."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"
    return (text[:117] + "...") if len(text) > 120 else text


def float_ops(gm) -> list[str]:
    """The layers of a converted FX graph left in float: modules with float weights (never quantized) and ops
    on dequantized values (the output excepted)."""
    names = []
    for n in gm.graph.nodes:
        mod = gm.get_submodule(n.target) if n.op == "call_module" else None
        if mod is not None and type(mod).__module__.startswith("torch.nn.modules") and any(
                True for _ in mod.parameters(recurse=False)):
            names.append(type(mod).__name__)
        elif n.op != "output" and any(getattr(a, "target", None) in ("dequantize", torch.dequantize)
                                      for a in n.all_input_nodes):
            names.append(type(mod).__name__ if mod is not None else getattr(n.target, "__name__", str(n.target)))
    return sorted(set(names) - {"dequantize", "quantize_per_tensor"})


def torch_ptq(model, calib: np.ndarray, x: np.ndarray, y_float: np.ndarray) -> str:
    """PyTorch's FX int8 PTQ (module docstring) of ``model``: a table cell."""
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, QConfig, QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "qnnpack"
    act = MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    qconfig = QConfig(activation=act, weight=PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric))
    per_tensor = QConfig(activation=act, weight=MinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))

    def quantize(mapping):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_fx(copy.deepcopy(model), mapping, (torch.from_numpy(calib[:1]),))
            with torch.no_grad():
                prepared(torch.from_numpy(calib))
                q = convert_fx(prepared)
                return q, q(torch.from_numpy(x)).numpy()

    notes = []
    try:
        try:
            q, y = quantize(QConfigMapping().set_global(qconfig))
        except AssertionError as e:
            if "ConvTranspose" not in str(e):
                raise
            notes.append("FX: no per-channel ConvTranspose2d weights, per-tensor there")
            q, y = quantize(QConfigMapping().set_global(qconfig).set_object_type(torch.nn.ConvTranspose2d,
                                                                                  per_tensor))
    except Exception as e:  # noqa: BLE001 -- FX's reasons are of many kinds; the table shows them
        return f"n/a: {reason(e)}"
    left = float_ops(q)
    if left:
        notes.append("float: " + ", ".join(left))
    return (f"{relative_rms(y, y_float):.4f} ({relative_rms(y, y_float, centered=True):.3f})"
            + (f"; {'; '.join(notes)}" if notes else ""))


def on_board(r: dict, board: str, x: np.ndarray, folder: Path) -> dict:
    """Build the exported model of ``r`` (harness.check's result) for ``board``; where it fits, run
    N_EMULATOR inputs on the emulator and compare with the reference."""
    b = get_board(board)
    out = folder / f"out-{board}"
    try:
        rep = build(r["model_path"], board, out, calib=r["calib_path"])
    except EdgepackError as e:
        if "does not fit" in str(e):
            return {"fits": f"no: {reason(e)}"}
        return {"fits": f"build failed: {reason(e)}", "failed": True}
    fits = (f"yes: flash {rep['flash_bytes'] / 1024:.0f} / {b['flash_bytes'] / 1024:.0f} KiB, RAM "
            f"{rep['ram_bytes'] / 1024:.0f} / {b['ram_bytes'] / 1024:.0f} KiB")
    stats = {}
    xe = x[:N_EMULATOR]
    _, raw_e = run(out, xe, on="emulator", stats=stats)
    _, raw_ref = run(out, xe, on="reference")
    same = bool(np.array_equal(raw_e, raw_ref))
    return {"fits": fits, "bit_exact": f"{'yes' if same else 'NO'} ({N_EMULATOR})",
            "instructions": f"{float(np.mean(stats['instructions'])):,.0f}", "failed": not same}


def row(name: str, fmt: str, folder: Path, board: str, ptq: str, x: np.ndarray) -> tuple[list[str], bool]:
    cells = [name, fmt]
    try:
        r = check(name, fmt, folder)
    except Exception as e:  # noqa: BLE001 -- a build failure is a table entry
        log(f"{name} {fmt}: host build failed\n{traceback.format_exc()}")
        return cells + [f"FAILED: {reason(e)}"] + ["-"] * 8, False
    rep = r["report"]
    ok = r["differ"] == 0
    cells += ["ok", "yes (32)" if ok else f"NO: {r['differ']} of {r['outputs']} differ",
              f"{r['rel_rms']:.4f} ({r['rel_rms_centered']:.3f})", ptq, f"{rep['flash_bytes']:,}",
              f"{rep['arena_bytes']:,} / {rep['liveness_bound_bytes']:,}"]
    log(f"{name} {fmt}: host ok, bit-exact {ok}, relative RMS {r['rel_rms']:.4f}; {board} ...")
    try:
        m = on_board(r, board, x, folder)
    except Exception as e:  # noqa: BLE001
        log(f"{name} {fmt}: {board} failed\n{traceback.format_exc()}")
        m = {"fits": f"FAILED: {reason(e)}", "failed": True}
    cells += [m["fits"], m.get("bit_exact", "-"), m.get("instructions", "-")]
    return cells, ok and not m.get("failed", False)


HEADER = ["model", "frontend", "build", "bit-exact ref == host", "rel RMS (input-dep.)",
          "torch int8 PTQ rel RMS (input-dep.)", "host flash B", "arena / bound B", "{board} fits",
          "{board} emulator == ref", "{board} instr / inference"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    ap.add_argument("--board", default="cortex-m7", help="emulated board for the fit, bit-exact and speed columns")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (models and builds)")
    a = ap.parse_args(argv)
    names = [n for n in a.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="ep-zoo-"))
    rows, ok = [], True
    try:
        for i, name in enumerate(names):
            model, shape = MODELS[name].make(seed=0)
            calib, x = batches(shape)
            log(f"[{i + 1}/{len(names)}] {name}: torch PTQ ...")
            ptq = torch_ptq(model, calib, x, float_outputs(model, x))
            for fmt in FORMATS:
                log(f"[{i + 1}/{len(names)}] {name} {fmt}: host build ...")
                cells, good = row(name, fmt, work / name / fmt, a.board, ptq, x)
                rows.append(cells)
                ok &= good
    finally:
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    header = [h.format(board=a.board) for h in HEADER]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    print(f"\nrel RMS: of the dequantized host output against the float model on 32 held-out seeded inputs; in "
          f"brackets against the input-dependent part of the float output. torch int8 PTQ: FX, qnnpack, the same "
          f"calibration batch and inputs. {a.board}: fit of flash and RAM, then {N_EMULATOR} inputs on its emulator "
          f"(QEMU -icount) against the reference. See the docstring of benchmarks/zoo_table.py.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
