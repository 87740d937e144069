"""``edgepack build``: model file -> graph -> int8 graph -> TVM kernels + AOT C -> compiled -> OUT.

Data flows one way through the stages; each reads only the output of the one before it. Everything a user
gave (OUT, the model, the calibration and evaluation data) is checked before any work is done; the output
folder is written into a staging folder beside OUT and swapped in at the end (:mod:`edgepack.outdir`), so a
failed or interrupted build leaves an existing OUT as it was, and a build never replaces a folder that edgepack
did not write. The report, the card and the plots are written by their own modules.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from . import firmware, outdir, proc
from .boards import get_board
from .errors import EdgepackError, check_batch, load_npy

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "firmware" / "runtime"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def load_calibration(path, input_shape, n_default: int = 32, x=None, batch_axis: int = 0):
    """A float batch in the model's input layout (batch at ``batch_axis``: 1 for a (T, N, F) sequence model);
    without a file, a standard-normal batch and a warning. ``x``: the file's array if it was read already (to
    take a TorchScript model's input shape from it)."""
    rest = tuple(d for i, d in enumerate(input_shape) if i != batch_axis)
    if path is None:
        log(f"warning: no --calib data; calibrating activations on {n_default} standard-normal inputs "
            "(accuracy will suffer: pass --calib DATA.npy with real inputs)")
        rng = np.random.default_rng(0)
        shape = rest[:batch_axis] + (n_default,) + rest[batch_axis:]
        return rng.standard_normal(shape).astype(np.float32), "standard-normal"
    path = Path(path)
    x = read_calibration(path, batch_axis) if x is None else x
    if x.shape[:batch_axis] + x.shape[batch_axis + 1:] != rest:
        if x.shape == rest:
            x = np.expand_dims(x, batch_axis)
        else:
            shown = ", ".join("N" if i == batch_axis else str(d) for i, d in enumerate(input_shape))
            raise EdgepackError(f"{path}: calibration batch has shape {x.shape}, the model input is ({shown})")
    return x, str(path)


def read_calibration(path, batch_axis: int = 0):
    """The --calib file as a checked float32 batch (numbers, at least one sample, all finite)."""
    return check_batch(load_npy(path, "--calib"), path, "--calib", batch_axis=batch_axis)


# --weights choices: expN = exponent codes with a tuned base and an integer codebook, pow2-N = power-of-two codes
WEIGHT_FORMATS = (("int8", "binary", "sparse") + tuple(f"exp{b}" for b in range(2, 9))
                  + tuple(f"pow2-{b}" for b in range(2, 7)))


def layer_formats(g, weights: str, overrides: dict) -> dict:
    """Weight format per conv / dense layer: ``weights`` for all but the first and last (int8 by default),
    then the per-layer overrides (which may set the first and last too)."""
    layers = [n.name for n in g.nodes if n.op in ("conv2d", "dense")]
    out = {name: "int8" for name in layers}
    if weights.startswith(("exp", "pow2-")):
        out.update({name: weights for name in layers[1:-1]})
    elif weights == "sparse":  # exact int8 arithmetic: every layer may take it
        out.update({name: weights for name in layers})
    for name, fmt in overrides.items():
        if name not in out:
            raise EdgepackError(f"--layer-weights {name}: no such conv or dense layer; layers: {', '.join(layers)}")
        out[name] = fmt
    return out


def apply_formats(g, weights: str, overrides: dict) -> tuple:
    """Binarize (in place) what ``--weights binary`` or ``--layer-weights NAME=binary`` names, then give the weight
    format per layer for quantize(). Returns (binarized layer names, formats). A binarized layer is found by the
    sign it reads, so its own format entry is int8 (the dense-weight default)."""
    binarized = []
    chosen = [k for k, f in overrides.items() if f == "binary"]
    if weights == "binary" or chosen:
        from .compress.binarize_ptq import binarize_graph
        binarized = binarize_graph(g, only=chosen or None)
    return binarized, layer_formats(g, weights, {k: ("int8" if f == "binary" else f) for k, f in overrides.items()})


def const_bytes(q) -> int:
    """Bytes of every constant tensor of a graph (weights, biases, multipliers, tables)."""
    return sum(int(t.data.nbytes) for t in q.tensors.values() if t.data is not None)


def compile_check(out: Path, board: dict) -> dict:
    """Compile every generated source with -Werror for the host and measure the object sizes."""
    obj = out / "host" / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise EdgepackError(f"C compiler '{cc}' not found: install the Debian package build-essential")
    srcs = [out / "model.c", out / "weights.c"] + sorted((out / "kernels").glob("*.c"))
    objs = []
    for s in srcs:
        o = obj / (s.stem + ".o")
        r = proc.run([cc, *CFLAGS, "-O2", "-I", str(out), "-c", str(s), "-o", str(o)])
        if r.returncode:
            lines = r.stderr.strip().splitlines() or ["?"]
            first = next((ln for ln in lines if "error" in ln), lines[0])
            raise EdgepackError(f"{s.name}: generated C does not compile with {' '.join(CFLAGS)}: {first} "
                                "(an edgepack bug: please report it)")
        objs.append(o)
    r = proc.run(["size", "-A", "-d", *map(str, objs)])
    sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            sec = parts[0]
            if sec.startswith(".data.rel.ro"):  # const data holding pointers, relocated once (PIE): read-only
                sizes["rodata"] += int(parts[1])
                continue
            for k in sizes:
                if sec == "." + k or sec.startswith("." + k + "."):
                    sizes[k] += int(parts[1])
    return sizes


def build(model_path, board_name: str = "host", out=None, calib=None, input_shape=None,
          command: str | None = None, weights: str = "int8", layer_weights: dict | None = None,
          per_channel: bool = True, eval_data=None, trust_pickle: bool = False, fit: dict | None = None,
          before_commit=None) -> dict:
    """Build ``model_path`` for a board into ``out`` (atomically). ``eval_data``: an .npz with x, y (labelled
    inputs in the model's layout); the build then measures float and built-model accuracy on it (built model
    from emulator outputs where the board has an emulator, else host) for the report and the card.
    ``trust_pickle``: allow a pickled nn.Module .pt (unpickling runs code from the file).

    ``fit``: the record of the ``edgepack fit`` search that chose this build (into the card).
    ``before_commit(folder, report)``: called with the finished staging folder before it becomes OUT; it may
    add files there (they enter the manifest) or raise EdgepackError, which leaves OUT untouched."""
    from .compress.quantize import quantize
    from .frontend import load_model
    from . import card, plots, provenance, report as reports
    from .graph import model_batch_axis, model_input_shape

    t_start = time.time()
    model_path = Path(model_path)
    out_given = out if out else Path(model_path.stem + "_" + board_name)
    # ---- everything the user gave is checked before any work -------------------------------------------
    out = outdir.check_target(out_given)
    outdir.remove_stale_staging(out.parent)  # left by builds into this folder that were killed
    board = get_board(board_name)
    if not command:  # the CLI line that does the same (for API calls)
        opts = [f"--calib {calib}" if calib is not None else "",
                f"--input-shape {','.join(map(str, input_shape))}" if input_shape else "",
                f"--weights {weights}" if weights != "int8" else "",
                "--scale per-layer" if not per_channel else "",
                "--layer-weights " + ",".join(f"{k}={v}" for k, v in layer_weights.items()) if layer_weights else "",
                f"--eval {eval_data}" if eval_data is not None else "",
                "--trust-pickle" if trust_pickle else ""]
        command = " ".join([f"edgepack build {model_path} --board {board_name} -o {out_given}"]
                           + [o for o in opts if o])
    timings = {}
    warnings = []

    formats = WEIGHT_FORMATS
    if weights not in formats:
        raise EdgepackError(f"--weights {weights}: unknown weight format; choose one of {', '.join(formats)}")
    for name, fmt in (layer_weights or {}).items():
        if fmt not in formats:
            raise EdgepackError(f"--layer-weights {name}={fmt}: per-layer format must be int8, binary, sparse, "
                                "exp2..exp8 or pow2-2..pow2-6")
    if weights == "binary" and any(f != "int8" for f in (layer_weights or {}).values()):
        raise EdgepackError("--weights binary binarizes every layer but the first and last; with "
                            "--layer-weights name=binary binarize chosen layers of an int8 build instead")
    x_file = read_calibration(calib) if calib is not None else None
    evaluation = None
    if eval_data is not None:
        from .errors import load_labelled_npz
        xe, ye = load_labelled_npz(eval_data, "--eval")
        evaluation = (xe, ye, str(eval_data))
    if input_shape is None and x_file is not None and model_path.suffix.lower() in (".pt", ".pth"):
        input_shape = (1,) + tuple(x_file.shape[1:])  # TorchScript / nn.Module files carry no input shape

    t = time.time()
    g = load_model(model_path, input_shape=input_shape, trust_pickle=trust_pickle)
    timings["import"] = time.time() - t
    in_shape = model_input_shape(g)  # the model's own layout (calibration and evaluation data use it)
    batch_axis = model_batch_axis(g.meta, "input", g.tensors[g.inputs[0]].shape)
    if evaluation is not None and tuple(evaluation[0].shape[1:]) != tuple(in_shape[1:]):
        raise EdgepackError(f"{eval_data}: inputs of shape {tuple(evaluation[0].shape[1:])} do not match the model "
                            f"input (N, {', '.join(map(str, in_shape[1:]))})")
    firmware.check_fits_early(board, g, int8_weights=weights == "int8" and not any(
        f != "int8" for f in (layer_weights or {}).values()))
    binarized, weight_formats = apply_formats(g, weights, layer_weights or {})
    g.meta.setdefault("name", model_path.stem)
    x_cal, cal_source = load_calibration(calib, in_shape, x=x_file, batch_axis=batch_axis)

    t = time.time()
    q = quantize(g, x_cal, per_channel=per_channel, weight_formats=weight_formats)
    q.meta["quantization"]["calibration_source"] = cal_source
    q.meta["quantization"]["weights_option"] = weights
    q.meta["quantization"]["weight_scale"] = "per-channel" if per_channel else "per-layer"
    q.meta["quantization"]["layer_weight_formats"] = weight_formats
    q.meta["quantization"]["binarized_post_training"] = binarized
    timings["quantize"] = time.time() - t
    untaken = format_not_taken(g, q, weights)
    if untaken:
        log(f"warning: {untaken}")
        warnings.append(untaken)
    firmware.check_fits(board, const_bytes(q), _arena_bytes(q), "after quantization")

    with outdir.Staging(out) as stage:
        tmp = stage.dir
        facts, sizes, elf = emit(q, board, tmp, command, timings)
        report = reports.make_report(g, q, facts, sizes, board, model_path, command, elf)
        report["warnings"] = warnings
        t = time.time()
        measured = measure(tmp, g, board, elf, x_cal, evaluation, report)
        timings["measure"] = time.time() - t
        timings["total"] = time.time() - t_start
        report["build_seconds"] = {k: round(v, 3) for k, v in timings.items()}
        report["measured"] = measured
        qcard = card.make_card(g, q, report, board, provenance.read(model_path), measured, fit=fit)
        card.write(tmp, qcard)
        pngs = plots.write_plots(tmp, report)
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        (tmp / "report.md").write_text(reports.report_md(report, pngs))
        if before_commit is not None:
            before_commit(tmp, report)
        stage.commit(command)
    return report


def _arena_bytes(q) -> int:
    from .codegen.memplan import plan
    try:
        return plan(q).arena_bytes
    except ValueError:
        return 0


def format_not_taken(g, q, weights: str) -> str | None:
    """A sentence when ``--weights`` asked for a format that no layer of the built model took, else None."""
    if weights == "int8":
        return None
    from .report import layer_weight_format
    taken = [n.name for n in q.nodes if (layer_weight_format(n) or "int8").startswith(
        "sparse" if weights == "sparse" else weights)]
    if taken:
        return None
    layers = [n for n in g.nodes if n.op in ("conv2d", "dense")]
    why = {"binary": "binary weights go to every conv / dense layer but the first and last, and not to depthwise "
                     "convolutions",
           "sparse": "no layer's weights are stored smaller as sparse rows (see each layer's sparse_note in "
                     "report.json)"}.get(weights, "exponent codes go to every conv / dense layer but the first and "
                                                   "last")
    return (f"--weights {weights}: no layer of this model can take it ({len(layers)} conv / dense layer(s); {why}); "
            "the model was built with int8 weights")


def emit(q, board: dict, folder: Path, command: str, timings: dict | None = None):
    """Write an integer graph's C, runtime and graph files into ``folder``, compile-check them, and build
    the host module (every board: ``--on host`` is the bit-exact twin of the board), then cross-compile the
    board's firmware. Returns (codegen facts, host object sizes, ELF sizes or {})."""
    from .codegen.aot import generate
    from .codegen.schedules import board_features

    timings = {} if timings is None else timings
    t = time.time()
    facts = generate(q, folder, mcpu=board.get("cpu") or None, command=command, features=board_features(board))
    shutil.copytree(RUNTIME_DIR, folder / "runtime")
    timings["codegen"] = time.time() - t
    t = time.time()
    sizes = compile_check(folder, board)
    timings["compile"] = time.time() - t
    q.save(folder)
    t = time.time()
    from .runners.host import _cffi
    _cffi().build(folder)
    timings["host_build"] = time.time() - t
    (folder / "board.json").write_text(json.dumps(board, indent=1))
    firmware.write_sources(folder, board, command)
    t = time.time()
    elf = firmware.build(folder, board, facts)
    timings["firmware"] = time.time() - t
    return facts, sizes, elf


EMULATOR_CHECK_INPUTS = 16


def extreme_picks(x: np.ndarray, k: int = EMULATOR_CHECK_INPUTS) -> np.ndarray:
    """Indices of up to ``k`` samples of ``x`` (batch first): those holding the batch's extremes (smallest and
    largest value, mean and norm), then the first ones."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    first = [int(f(v)) for v in (flat.min(1), flat.max(1), flat.mean(1), np.linalg.norm(flat, axis=1))
             for f in (np.argmin, np.argmax)]
    picks = list(dict.fromkeys(first + list(range(len(x)))))[:k]
    return np.array(sorted(picks), dtype=np.int64)


def measure(folder: Path, g, board: dict, elf, x_cal, evaluation, report) -> dict:
    """Run the built model and compare targets bit for bit: the whole calibration batch on reference and host,
    up to 16 of its inputs (its extremes included) on the emulator, and with ``evaluation`` = (x, y, source)
    all of it on every target. Measures accuracy (float graph and built model: emulator outputs where the
    board has an emulator and its firmware was built, else host), and on Cortex-M the instructions per
    inference (QEMU icount), also per layer (into ``report["layers"]``). Batches are in the model's own layout
    (batch axis 1 for a (T, N, F) sequence model)."""
    from .graph import model_batch_axis
    from .reference.float_exec import run_float_output
    from .runners import run

    ax_in = model_batch_axis(g.meta, "input", g.tensors[g.inputs[0]].shape)
    ax_out = model_batch_axis(g.meta, "output", g.tensors[g.outputs[0]].shape)
    out = {}
    emulated = bool(board.get("emulator") and elf)
    if board.get("emulator") and not elf:
        out["emulator"] = "not run: the firmware was not built (cross toolchain missing)"
    n_cal = x_cal.shape[ax_in]
    sets = [("calibration", x_cal, extreme_picks(np.moveaxis(x_cal, ax_in, 0)))]
    if evaluation:
        n_eval = evaluation[0].shape[ax_in]
        sets.insert(0, ("evaluation", evaluation[0], np.arange(n_eval)))
    checks, results, emulator = [], {}, None
    for what, x, emu_idx in sets:
        raws, ys = {}, {}
        for on in ("reference", "host"):
            ys[on], raws[on] = run(folder, x, on=on, check=False)
        same = bool(np.array_equal(raws["host"], raws["reference"]))
        n = x.shape[ax_in]
        checks.append({"inputs": what, "count": int(n), "targets": ["reference", "host"], "equal": same})
        if emulated and "emulator" not in out:
            stats = {}
            try:
                ys["emulator"], raw_e = run(folder, np.take(x, emu_idx, axis=ax_in), on="emulator", stats=stats,
                                            check=False)
                eq = bool(np.array_equal(raw_e, np.take(raws["reference"], emu_idx, axis=ax_out)))
                checks.append({"inputs": what + (" (extremes and first)" if len(emu_idx) < n else ""),
                               "count": int(len(emu_idx)), "targets": ["reference", "emulator"], "equal": eq})
                if emulator is None or what == "evaluation":
                    emulator = stats
            except EdgepackError as e:
                out["emulator"] = f"not run: {e}"
        results[what] = ys
    same = all(c["equal"] for c in checks)
    out["bit_exact"] = "; ".join(f"{' == '.join(c['targets'])} on {c['count']} {c['inputs']} input(s)"
                                 for c in checks) + f": {same}"
    out["bit_exact_checks"] = checks
    if not same:
        log("warning: the targets disagree (" + out["bit_exact"] + "); this is an edgepack bug: please report it")
    if emulator and "instructions" in emulator:
        ins = emulator["instructions"]
        out["instructions_per_inference"] = float(ins.mean())
        out["instructions_min_max"] = [int(ins.min()), int(ins.max())]
        out["instructions_measured_on"] = f"{board.get('emulator')} -icount, {len(ins)} input(s)"
        per = emulator["layer_instructions"].mean(axis=0)
        for l, v in zip(report["layers"], per):
            l["instructions"] = float(v)
    if evaluation:
        xe, ye, source = evaluation
        yf = run_float_output(g, xe)
        out["eval_data"] = source
        out["eval_images"] = int(len(ye))
        out["float_accuracy"] = float((yf.reshape(len(ye), -1).argmax(1) == ye).mean())
        ys = results["evaluation"]
        on = "emulator" if "emulator" in ys else "host"
        out["built_accuracy"] = float((ys[on].reshape(len(ye), -1).argmax(1) == ye).mean())
        out["built_accuracy_measured_on"] = on + (f" ({board.get('emulator')})" if on == "emulator" else " (cffi)")
    return out
