"""``edgepack build``: model file -> graph -> int8 graph -> TVM kernels + AOT C -> compiled -> OUT.

Data flows one way through the stages; each reads only the output of the one before it. The output folder is
written into a temporary sibling and swapped in at the end, so a failed build leaves an existing OUT as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import __version__
from . import firmware
from .boards import get_board
from .firmware import check_constants_fit
from .errors import EdgepackError, load_npy
from .reference.ops import SPARSE_OPS

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "firmware" / "runtime"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def load_calibration(path, input_shape, n_default: int = 32):
    """A float batch in the model's input layout; without a file, a standard-normal batch and a warning."""
    if path is None:
        log(f"warning: no --calib data; calibrating activations on {n_default} standard-normal inputs "
            "(accuracy will suffer: pass --calib DATA.npy with real inputs)")
        rng = np.random.default_rng(0)
        return rng.standard_normal((n_default,) + tuple(input_shape[1:])).astype(np.float32), "standard-normal"
    path = Path(path)
    x = load_npy(path, "--calib")
    if x.shape[1:] != tuple(input_shape[1:]):
        if x.shape == tuple(input_shape[1:]):
            x = x[None]
        else:
            raise EdgepackError(f"{path}: calibration batch has shape {x.shape}, the model input is "
                                f"(N, {', '.join(map(str, input_shape[1:]))})")
    return x.astype(np.float32), str(path)


def layer_formats(g, weights: str, overrides: dict) -> dict:
    """Weight format per conv / dense layer: ``weights`` for all but the first and last (int8 by default),
    then the per-layer overrides (which may set the first and last too)."""
    layers = [n.name for n in g.nodes if n.op in ("conv2d", "dense")]
    out = {name: "int8" for name in layers}
    if weights.startswith("exp"):
        out.update({name: weights for name in layers[1:-1]})
    elif weights == "sparse":  # exact int8 arithmetic: every layer may take it
        out.update({name: weights for name in layers})
    for name, fmt in overrides.items():
        if name not in out:
            raise EdgepackError(f"--layer-weights {name}: no such conv or dense layer; layers: {', '.join(layers)}")
        out[name] = fmt
    return out


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
        r = subprocess.run([cc, *CFLAGS, "-O2", "-I", str(out), "-c", str(s), "-o", str(o)],
                           capture_output=True, text=True)
        if r.returncode:
            lines = r.stderr.strip().splitlines() or ["?"]
            first = next((ln for ln in lines if "error" in ln), lines[0])
            raise EdgepackError(f"{s.name}: generated C does not compile with {' '.join(CFLAGS)}: {first} "
                                "(an edgepack bug: please report it)")
        objs.append(o)
    r = subprocess.run(["size", "-A", "-d", *map(str, objs)], capture_output=True, text=True)
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
          per_channel: bool = True, eval_data=None) -> dict:
    """Build ``model_path`` for a board into ``out`` (atomically). ``eval_data``: an .npz with x, y (labelled
    inputs in the model's layout); the build then measures float and built-model accuracy on it (built model
    from emulator outputs where the board has an emulator, else host) for the report and the card."""
    from .compress.quantize import quantize
    from .frontend import load_model

    t_start = time.time()
    board = get_board(board_name)
    model_path = Path(model_path)
    out = Path(out) if out else Path(model_path.stem + "_" + board_name)
    if not command:  # the CLI line that does the same (for API calls)
        opts = [f"--calib {calib}" if calib is not None else "",
                f"--input-shape {','.join(map(str, input_shape))}" if input_shape else "",
                f"--weights {weights}" if weights != "int8" else "",
                "--scale per-layer" if not per_channel else "",
                "--layer-weights " + ",".join(f"{k}={v}" for k, v in layer_weights.items()) if layer_weights else "",
                f"--eval {eval_data}" if eval_data is not None else ""]
        command = " ".join([f"edgepack build {model_path} --board {board_name} -o {out}"] + [o for o in opts if o])
    timings = {}

    formats = ("int8", "binary", "sparse") + tuple(f"exp{b}" for b in range(2, 7))
    if weights not in formats:
        raise EdgepackError(f"--weights {weights}: unknown weight format; choose one of {', '.join(formats)}")
    for name, fmt in (layer_weights or {}).items():
        if fmt not in formats or fmt == "binary":
            raise EdgepackError(f"--layer-weights {name}={fmt}: per-layer format must be int8, sparse or exp2..exp6")
    t = time.time()
    g = load_model(model_path, input_shape=input_shape)
    timings["import"] = time.time() - t
    binarized = []
    if weights == "binary":
        from .compress.binarize_ptq import binarize_graph
        binarized = binarize_graph(g)
    in_shape = g.tensors[g.inputs[0]].shape
    g.meta.setdefault("name", model_path.stem)
    x_cal, cal_source = load_calibration(calib, in_shape)
    evaluation = None
    if eval_data is not None:
        from .errors import load_labelled_npz
        xe, ye = load_labelled_npz(eval_data, "--eval")
        if tuple(xe.shape[1:]) != tuple(in_shape[1:]):
            raise EdgepackError(f"{eval_data}: inputs of shape {tuple(xe.shape[1:])} do not match the model input "
                                f"(N, {', '.join(map(str, in_shape[1:]))})")
        evaluation = (xe, ye, str(eval_data))

    weight_formats = layer_formats(g, weights, layer_weights or {})
    t = time.time()
    q = quantize(g, x_cal, per_channel=per_channel, weight_formats=weight_formats)
    q.meta["quantization"]["calibration_source"] = cal_source
    q.meta["quantization"]["weights_option"] = weights
    q.meta["quantization"]["weight_scale"] = "per-channel" if per_channel else "per-layer"
    q.meta["quantization"]["layer_weight_formats"] = weight_formats
    q.meta["quantization"]["binarized_post_training"] = binarized
    timings["quantize"] = time.time() - t
    check_constants_fit(board, sum(int(t.data.nbytes) for t in q.tensors.values() if t.data is not None))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        facts, sizes, elf = emit(q, board, tmp, command, timings)
        report = make_report(g, q, facts, sizes, board, model_path, command, elf)
        t = time.time()
        measured = measure(tmp, g, board, elf, x_cal, evaluation, report)
        timings["measure"] = time.time() - t
        timings["total"] = time.time() - t_start
        report["build_seconds"] = {k: round(v, 3) for k, v in timings.items()}
        report["measured"] = measured
        from . import card, provenance
        qcard = card.make_card(g, q, report, board, provenance.read(model_path), measured)
        card.write(tmp, qcard)
        plots = write_plots(tmp, report)
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        (tmp / "report.md").write_text(report_md(report, plots))
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


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


def measure(folder: Path, g, board: dict, elf, x_cal, evaluation, report) -> dict:
    """Run the built model: on ``evaluation`` = (x, y, source) if given, else on one calibration input.
    Measures accuracy (float graph and built model: emulator outputs where the board has an emulator and its
    firmware was built, else host), whether reference, host and emulator agree bit for bit, and on Cortex-M
    the instructions per inference (QEMU icount), also per layer (into ``report["layers"]``)."""
    from .reference.float_exec import run_float_output
    from .runners import run

    out = {}
    x = evaluation[0] if evaluation else x_cal[:1]
    raws = {}
    for on in ("reference", "host"):
        y_on, raws[on] = run(folder, x, on=on)
    emulator = None
    if board.get("emulator") and elf:
        stats = {}
        try:
            y_emu, raws["emulator"] = run(folder, x, on="emulator", stats=stats)
            emulator = stats
        except EdgepackError as e:
            out["emulator"] = f"not run: {e}"
    elif board.get("emulator"):
        out["emulator"] = "not run: the firmware was not built (cross toolchain missing)"
    names = list(raws)
    same = all(np.array_equal(raws[k], raws["reference"]) for k in names)
    out["bit_exact"] = (f"{' == '.join(names)} on {len(x)} {'evaluation' if evaluation else 'calibration'} "
                        f"input(s): {same}")
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
        on = "emulator" if "emulator" in raws else "host"
        y_built = y_emu if on == "emulator" else y_on
        out["built_accuracy"] = float((y_built.reshape(len(ye), -1).argmax(1) == ye).mean())
        out["built_accuracy_measured_on"] = on + (f" ({board.get('emulator')})" if on == "emulator" else " (cffi)")
    return out


def write_plots(folder: Path, report: dict) -> list:
    """arena.png (which tensor lives where in the arena, per layer step) and layers.png (per-layer instructions
    where measured, MACs, and weight bytes). Returns the file names written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    names = []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, b in enumerate(report["arena"]):
        ax.add_patch(Rectangle((b["first_op"] - 0.45, b["offset"]), b["last_op"] - b["first_op"] + 0.9,
                               b["bytes"], alpha=0.6, color=f"C{i % 10}"))
        ax.text(b["first_op"] - 0.4, b["offset"] + b["bytes"] / 2, ",".join(b["tensors"])[:18], fontsize=6,
                va="center")
    n_ops = max([b["last_op"] for b in report["arena"]] + [len(report["layers"]) - 1, 0])
    ax.set_xlim(-0.6, n_ops + 0.6)
    ax.set_ylim(0, max(report["arena_bytes"], 1))
    ax.set_xlabel("layer step")
    ax.set_ylabel("arena offset (bytes)")
    ax.set_title(f"arena: {report['arena_bytes']} B (liveness bound {report['liveness_bound_bytes']} B)")
    fig.tight_layout()
    fig.savefig(folder / "arena.png", dpi=90)
    plt.close(fig)
    names.append("arena.png")

    layers = report["layers"]
    has_ins = all(l.get("instructions") is not None for l in layers) and layers
    panels = [("instructions", "instructions (emulator)")] if has_ins else []
    panels += [("macs", "MACs"), ("weight_bytes", "weight bytes")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.8 * len(panels) + 0.6), sharex=True)
    axes = np.atleast_1d(axes)
    xs = np.arange(len(layers))
    for ax, (k, label) in zip(axes, panels):
        ax.bar(xs, [l.get(k) or 0 for l in layers], color="C0")
        ax.set_ylabel(label, fontsize=8)
    axes[-1].set_xticks(xs, [f"{l['name']}\n{l['op']}" for l in layers], rotation=60, fontsize=6)
    fig.tight_layout()
    fig.savefig(folder / "layers.png", dpi=90)
    plt.close(fig)
    names.append("layers.png")
    return names


def _swap_in(tmp: Path, out: Path):
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


WEIGHTED_OPS = ("conv2d_s8", "dwconv2d_s8", "dense_s8", "bconv2d_b1", "bconv2d_b1_s8", "conv2d_exp",
                "dwconv2d_exp", "dense_exp") + SPARSE_OPS


def _macs(q, n):
    t = q.tensors
    y = t[n.outputs[0]].shape
    if n.op == "conv2d_s8":
        o, kh, kw, ci = t[n.inputs[1]].shape
        return int(np.prod(y)) * kh * kw * ci
    if n.op in ("conv2d_exp", "dwconv2d_exp", "dense_exp") + SPARSE_OPS:
        return int(np.prod(y)) * int(np.prod(n.attrs["wshape"][1:]))
    if n.op in ("bconv2d_b1", "bconv2d_b1_s8"):  # binary multiply-accumulates (XNOR-popcount)
        o, kh, kw, _ = t[n.inputs[1]].shape
        return int(np.prod(y[:3])) * o * kh * kw * n.attrs["channels"]
    if n.op == "dwconv2d_s8":
        kh, kw, _ = t[n.inputs[1]].shape
        return int(np.prod(y)) * kh * kw
    if n.op == "dense_s8":
        return int(np.prod(t[n.inputs[1]].shape))
    return 0


def _weight_count(n, w) -> int:
    if w is None:
        return 0
    if "wshape" in n.attrs:  # exponent codes, sparse rows
        return int(np.prod(n.attrs["wshape"]))
    if "channels" in n.attrs and n.op.startswith("bconv"):  # packed bits
        return int(np.prod(w.shape[:-1])) * n.attrs["channels"]
    return int(w.data.size)


def make_report(g, q, facts, sizes, board, model_path, command, elf=None) -> dict:
    layers = []
    by_name = {l["name"]: l for l in facts["layers"]}
    for n in q.nodes:
        if n.op == "reshape":
            continue
        consts = [t for t in n.inputs if q.tensors[t].data is not None]
        w = q.tensors[n.inputs[1]] if n.op in WEIGHTED_OPS else None
        # the weight arrays: one, or values + index / mask + row pointers of sparse rows
        wts = [q.tensors[t] for t in n.inputs[1:4]] if n.op in SPARSE_OPS else [w] if w is not None else []
        wbytes = int(sum(t.data.nbytes for t in wts))
        fmt = None
        if w is not None:
            wf = n.attrs.get("weight_format", "int8")
            fmt = {"binary": "binary (1 bit, per-channel scale)", "int8": "int8 per-channel",
                   "sparse-csr": "int8 per-channel, CSR rows (int8 values, uint8/uint16 column indices, int32 "
                                 "row pointers)",
                   "sparse-bitmask": "int8 per-channel, bitmask rows (1-bit mask per weight, int8 nonzero "
                                     "values, int32 row pointers)"}.get(
                wf, f"{wf} (sign x 2^-e x per-channel scale)")
        layers.append({
            "name": n.name, "op": n.op, "kernel": by_name[n.name]["kernel"],
            "weight_format": fmt,
            "input_shapes": [list(q.tensors[t].shape) for t in n.inputs if q.tensors[t].data is None],
            "output_shape": list(q.tensors[n.outputs[0]].shape),
            "weight_shape": list(n.attrs["wshape"]) if n.op in SPARSE_OPS else
            list(w.shape) if w is not None else None,
            "macs": _macs(q, n),
            "weight_bytes": wbytes,
            "weight_bytes_in_elf": sum((elf or {}).get("symbols", {}).get(facts["const_symbols"].get(t.name)) or 0
                                       for t in wts) or None if wts and elf else None,
            "packed_bytes": wbytes if fmt and (not fmt.startswith("int8") or n.op in SPARSE_OPS) else None,
            "weight_nonzero": int(n.attrs["nnz"]) if "nnz" in n.attrs else
            (int(np.count_nonzero(w.data)) if w is not None and wf == "int8" else None),
            "sparse_note": n.attrs.get("sparse_note"),
            "weight_count": _weight_count(n, w),
            "const_bytes": int(sum(q.tensors[t].data.nbytes for t in consts)),
            "output_storage": by_name[n.name]["output_storage"],
            "arena_offset": by_name[n.name]["arena_offset"],
            "schedule": by_name[n.name].get("schedule", "plain"),
            "schedule_note": by_name[n.name].get("schedule_note"),
            "scratch_bytes": by_name[n.name].get("scratch_bytes", 0),
            "scratch_offset": by_name[n.name].get("scratch_offset"),
        })
    params = sum(int(t.data.size) for t in g.tensors.values() if t.data is not None)
    if elf:
        flash, ram = elf["flash_bytes"], elf["ram_bytes"]
        measured = "firmware.elf (size -A: flash = text+rodata+data, RAM = data+bss+stack)"
        ram_note = "arena, harness input/output buffers, static data and the reserved stack"
    else:
        flash = sizes["text"] + sizes["rodata"] + sizes["data"]
        ram = facts["arena_bytes"] + sizes["data"] + sizes["bss"]
        measured = "host objects of the model (size -A: flash = text+rodata+data, RAM = arena+data+bss)"
        ram_note = "arena + static data; input and output buffers belong to the caller; no stack on the host"
    return {
        "edgepack": __version__, "command": command, "model": str(model_path),
        "model_sha256": g.meta.get("source", {}).get("sha256"), "board": board["name"],
        "flash_bytes": flash, "ram_bytes": ram, "sizes_measured_from": measured, "ram_note": ram_note,
        "board_flash_bytes": board.get("flash_bytes") or None, "board_ram_bytes": board.get("ram_bytes") or None,
        "elf_sections": elf.get("sections") if elf else None,
        "weights_bytes": sum(l["weight_bytes"] for l in layers),
        "const_bytes": facts["const_bytes"], "object_sizes": sizes,
        "arena_bytes": facts["arena_bytes"], "liveness_bound_bytes": facts["liveness_bound_bytes"],
        "tensor_liveness_bound_bytes": facts.get("tensor_liveness_bound_bytes"),
        "largest_scratch_bytes": facts.get("largest_scratch_bytes", 0),
        "activations_total_bytes": facts["activations_total_bytes"],
        "arena_over_bound": round(facts["arena_over_bound"], 4), "arena_plan": facts["arena_plan"],
        "input_bytes": facts["input_bytes"], "output_bytes": facts["output_bytes"],
        "macs": sum(l["macs"] for l in layers), "float_parameters": params,
        "kernels": facts["kernels"], "kernel_codegen_seconds": round(facts["kernel_seconds"], 3),
        "quantization": q.meta.get("quantization", {}), "layers": layers, "arena": facts["buffers"],
    }


def report_md(r: dict, plots=()) -> str:
    lines = [f"# edgepack build report: {Path(r['model']).name} on {r['board']}", "",
             f"`{r['command']}`", "",
             "| what | value |", "|---|---|"]
    for k in ("flash_bytes", "ram_bytes", "weights_bytes", "arena_bytes", "liveness_bound_bytes",
              "tensor_liveness_bound_bytes", "largest_scratch_bytes", "activations_total_bytes", "arena_over_bound",
              "macs", "float_parameters"):
        if k in r:
            lines.append(f"| {k} | {r[k]} |")
    lines.append(f"| build seconds | {r.get('build_seconds', {}).get('total', '')} |")
    for k, v in (r.get("measured") or {}).items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "| # | layer | op | kernel | schedule | weights | input shapes | output | MACs | weight bytes "
              "| arena offset | scratch (offset) | instructions | MAC/instr |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, l in enumerate(r["layers"]):
        off = l["arena_offset"] if l["arena_offset"] is not None else l["output_storage"]
        ins = f"{l['instructions']:.0f}" if l.get("instructions") is not None else ""
        mpi = f"{l['macs'] / l['instructions']:.3f}" if ins and l["macs"] and l["instructions"] else ""
        scr = f"{l['scratch_bytes']} ({l['scratch_offset']})" if l.get("scratch_bytes") else ""
        lines.append(f"| {i} | {l['name']} | {l['op']} | {l['kernel']} | {l.get('schedule', 'plain')} | "
                     f"{l['weight_format'] or ''} | {l['input_shapes']} | {l['output_shape']} | {l['macs']} | "
                     f"{l['weight_bytes']} | {off} | {scr} | {ins} | {mpi} |")
    for p in plots:
        lines += ["", f"![{p}]({p})"]
    lines += ["", "Quantization card: quantization_card.md (`edgepack card OUT`)."]
    return "\n".join(lines) + "\n"
