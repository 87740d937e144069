"""Command line: argument parsing only; the work is done by the library."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .errors import EdgepackError, Terminated


def _shape(s: str):
    try:
        return tuple(int(v) for v in s.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 1,1,28,28, got {s!r}")


def _layer_formats(s: str) -> dict:
    out = {}
    for item in filter(None, s.split(",")):
        name, sep, fmt = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=FORMAT, got {item!r}")
        out[name.strip()] = fmt.strip()
    return out


def cmd_build(a):
    from .build import build

    cmd = "edgepack " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["build"] else None
    r = build(a.model, a.board, a.output, a.calib, a.input_shape, command=cmd, weights=a.weights,
              layer_weights=a.layer_weights, per_channel=a.scale == "per-channel", eval_data=a.eval,
              trust_pickle=a.trust_pickle)
    out = a.output or f"{Path(a.model).stem}_{a.board}"
    print(f"built {out}: {len(r['layers'])} layers, {r['macs']} MACs, weights {r['weights_bytes']} B, "
          f"flash {r['flash_bytes']} B, arena {r['arena_bytes']} B (liveness bound "
          f"{r['liveness_bound_bytes']} B), {r['build_seconds']['total']:.1f} s")
    m = r.get("measured", {})
    if "instructions_per_inference" in m:
        print(f"instructions per inference: {m['instructions_per_inference']:.0f} ({m['instructions_measured_on']})")
    if "built_accuracy" in m:
        print(f"accuracy on {m['eval_images']} images of {m['eval_data']}: float {m['float_accuracy']:.4f}, built "
              f"{m['built_accuracy']:.4f} ({m['built_accuracy_measured_on']})")
    print(m["bit_exact"])


def cmd_fit(a):
    from .fit import DEFAULT_FORMATS, fit, parse_bytes, parse_count

    cmd = "edgepack " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["fit"] else None
    formats = tuple(f.strip() for f in a.formats.split(",") if f.strip()) if a.formats else DEFAULT_FORMATS
    prune = tuple(float(v) for v in a.prune.split(",")) if a.prune else None
    r = fit(a.model, a.board, a.data, a.eval, a.output, calib=a.calib, max_drop=a.max_drop,
            flash=parse_bytes(a.flash, "--flash") if a.flash else None,
            ram=parse_bytes(a.ram, "--ram") if a.ram else None,
            max_instructions=parse_count(a.max_instructions, "--max-instructions") if a.max_instructions else None,
            objective=a.objective, formats=formats, prune=prune, work=a.work, input_shape=a.input_shape,
            trust_pickle=a.trust_pickle, max_candidates=a.max_candidates, command=cmd)
    c, rep = r["chosen"], r["report"]
    m = rep["measured"]
    print(f"fit {a.output}: level {c['level']}, {', '.join(f'{k}={v}' for k, v in c['config'].items())}")
    print(f"flash {rep['flash_bytes']} B, RAM {rep['ram_bytes']} B, "
          + (f"{m['instructions_per_inference']:.0f} instructions per inference, "
             if "instructions_per_inference" in m else "")
          + f"accuracy {m['built_accuracy']:.4f} ({m['built_accuracy_measured_on']}) against float "
            f"{m['float_accuracy']:.4f}; {r['candidates']} candidates; see {Path(a.output) / 'fit.md'}")


def cmd_card(a):
    from . import card

    if len(a.out) == 1:
        c = card.load(a.out[0])
        print(card.card_md(c), end="")
    elif len(a.out) == 2:
        print(card.diff_text(card.load(a.out[0]), card.load(a.out[1]), a.out[0], a.out[1]), end="")
    else:
        raise EdgepackError("edgepack card takes one output folder (print its card) or two (compare them)")


def cmd_run(a):
    from .errors import load_npy
    from .runners import run

    xp = Path(a.input)
    for opt, f in (("--output", a.output), ("--raw", a.raw)):
        if f and (Path(f).is_dir() or (Path(f).exists() and xp.exists() and Path(f).samefile(xp))):
            raise EdgepackError(f"{opt} {f}: is {'a folder' if Path(f).is_dir() else 'the --input file'}; "
                                "give a new .npy file name")
    x = load_npy(xp, "--input")
    stats = {}
    y, raw = run(a.out, x, on=a.on, source=str(xp), stats=stats, allow_edited=a.allow_edited)
    for f, arr in ((a.output, y), (a.raw, raw)):
        if f:
            _save_npy(Path(f), arr)
    if not a.output and not a.raw:
        print(y)
    else:
        print(f"ran {len(raw)} input(s) on {a.on}" + (f"; float outputs in {a.output}" if a.output else "")
              + (f"; raw int8 outputs in {a.raw}" if a.raw else ""))
    if "instructions" in stats:
        import json

        ins, per_layer = stats["instructions"], stats["layer_instructions"]
        names = [l["name"] for l in json.loads((Path(a.out) / "report.json").read_text())["layers"]]
        print(f"instructions per inference: {ins.mean():.0f} (min {ins.min()}, max {ins.max()}; "
              "QEMU -icount, SysTick)")
        for name, v in zip(names, per_layer.mean(axis=0)):
            print(f"  {name:32s} {v:12.0f}")


def _save_npy(path: Path, arr):
    """np.save to ``path`` through a temporary file, so an interrupted run leaves no half-written file."""
    import os
    import tempfile

    import numpy as np

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cmd_prune(a):
    from .compress.prune_taylor import prune_file

    cmd = "edgepack " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["prune"] else None
    if a.target_macs is None and a.target_params is None:
        raise EdgepackError("give --target-macs and / or --target-params (fractions of the original, e.g. 0.6)")
    r = prune_file(a.model, a.data, a.output, a.target_macs, a.target_params, val=a.val, holdout=a.holdout,
                   input_shape=a.input_shape, command=cmd, criterion=a.criterion, per_step=a.per_step,
                   step_batches=a.step_batches, batch=a.batch, lr=a.lr, finetune_epochs=a.finetune_epochs,
                   seed=a.seed, checkpoint=a.checkpoint, trust_pickle=a.trust_pickle,
                   channel_multiple=a.channel_multiple)
    acc = (f"; validation accuracy {r['val_acc_before']:.4f} -> {r['val_acc_after']:.4f}"
           if r["val_acc_before"] is not None else "")
    print(f"pruned {a.model} -> {a.output}: MACs {r['macs_before']} -> {r['macs']} "
          f"({100 * r['macs_fraction']:.1f} %), parameters {r['params_before']} -> {r['params']} "
          f"({100 * r['params_fraction']:.1f} %), {r['steps']} steps{acc}, {r['seconds']} s; "
          f"details in {a.output}.json")


def cmd_flash(a):
    from .flash import flash

    r = flash(a.out, probe=a.probe)
    print(f"flashed {r['elf']} to {r['board']} (pyOCD target {r['target']}, probe {r['probe']}) and reset it")


def cmd_boards(_a):
    from .boards import all_boards

    for name, b in all_boards().items():
        flash = f"{b['flash_bytes'] // 1024} KiB" if b.get("flash_bytes") else "-"
        ram = f"{b['ram_bytes'] // 1024} KiB" if b.get("ram_bytes") else "-"
        tool = (b.get("toolchain_prefix", "") + "gcc") if b.get("arch") in ("cortex-m", "linux") else "cc"
        print(f"{name:16s} flash {flash:>9s}  RAM {ram:>9s}  toolchain {tool:24s} "
              f"emulator {b.get('emulator') or '-'}")


TRUST_HELP = ("allow a pickled nn.Module .pt: unpickling it runs code from the file, so pass this only for "
              "files you trust (TorchScript .pt, .pt2 and .onnx never need it)")


def cmd_ops(_a):
    from .frontend import ops_text

    print(ops_text(), end="")


def parser():
    p = argparse.ArgumentParser(prog="edgepack", description="Compress a model and run it bit-exactly on "
                                "microcontrollers, the Raspberry Pi and the host.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a model for a board")
    b.add_argument("model", help=".onnx, .pt2 (torch.export.save) or .pt (TorchScript or pickled nn.Module)")
    b.add_argument("--board", default="host")
    b.add_argument("-o", "--output", help="output folder (default: <model>_<board>)")
    b.add_argument("--calib", help=".npy float batch in the model's input layout, for calibration")
    b.add_argument("--input-shape", type=_shape, help="input shape, e.g. 1,1,28,28 (for .pt files)")
    from .build import WEIGHT_FORMATS
    b.add_argument("--weights", default="int8", choices=WEIGHT_FORMATS,
                   help="int8 (default); binary: binarize every conv/dense but the first and last after "
                        "training (for sizing and timing; layers trained with ReCU keep their weights); expN "
                        "(N = 2..8): exponential codes of N bits (sign x s x q^k, base q and scale s tuned per "
                        "channel, an integer codebook per channel) for all but the first and last layer; pow2-N "
                        "(N = 2..6): power-of-two codes (sign x 2^-e x scale, shift-and-add kernels); "
                        "sparse: int8 weights stored as sparse rows where that is smaller (exact int8 "
                        "arithmetic; for models trained with the compressibility loss)")
    b.add_argument("--scale", default="per-channel", choices=["per-channel", "per-layer"],
                   help="weight scale granularity (int8, expN and pow2-N weights)")
    b.add_argument("--layer-weights", type=_layer_formats, default={},
                   help="per-layer override, e.g. conv2d_3=int8,linear=exp6 (mixed precision)")
    b.add_argument("--eval", help=".npz with x (inputs in the model's layout) and y (integer labels): measure "
                   "float and built-model accuracy (emulator outputs where the board has one) for the card")
    b.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)
    b.set_defaults(func=cmd_build)
    ft = sub.add_parser("fit", help="search per-layer weight formats (and a pruning level) for the smallest or "
                                    "fastest build that meets a budget and keeps the accuracy")
    ft.add_argument("model", help=".onnx, .pt2 or .pt (as for build)")
    ft.add_argument("--board", required=True)
    ft.add_argument("--data", help=".npz with x, y: training data (calibration, pruning and its fine-tuning)")
    ft.add_argument("--eval", required=True, help=".npz with x, y: the accuracy every candidate is scored on")
    ft.add_argument("-o", "--output", required=True, help="output folder: the build of the chosen configuration")
    ft.add_argument("--max-drop", type=float, default=1.0, help="accuracy points allowed below float (default 1)")
    ft.add_argument("--flash", help="flash budget, e.g. 512K (default: the board's flash)")
    ft.add_argument("--ram", help="RAM budget, e.g. 128K (default: the board's RAM)")
    ft.add_argument("--max-instructions", help="instructions per inference, e.g. 20M")
    ft.add_argument("--objective", default="size", choices=["size", "speed"],
                    help="minimise flash (size, default) or instructions (speed) within the budget")
    ft.add_argument("--formats", help="weight formats to search (default int8,exp3,exp4,exp5,exp6,binary,sparse)")
    ft.add_argument("--prune", help="pruning levels, fractions of the MACs (default 1,0.75,0.5 with --data; "
                                    "1 for none)")
    ft.add_argument("--calib", help=".npy calibration batch (default: 200 images of --data)")
    ft.add_argument("--work", help="checkpoint and measurement folder (default OUT.fit); rerun to resume")
    ft.add_argument("--max-candidates", type=int, default=200, help="evaluations at most (default 200)")
    ft.add_argument("--input-shape", type=_shape, help="input shape, e.g. 1,1,28,28 (for .pt files)")
    ft.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)
    ft.set_defaults(func=cmd_fit)
    c = sub.add_parser("card", help="print a build's quantization card, or compare two builds' cards")
    c.add_argument("out", nargs="+", help="one output folder, or two to compare")
    c.set_defaults(func=cmd_card)
    r = sub.add_parser("run", help="run a built model")
    r.add_argument("out", help="the output folder of edgepack build")
    r.add_argument("--input", required=True, help=".npy float batch in the model's input layout")
    r.add_argument("--output", help="write float outputs (.npy)")
    r.add_argument("--raw", help="write raw int8 outputs before dequantization (.npy)")
    r.add_argument("--on", default="host", help="reference | host | emulator")
    r.add_argument("--allow-edited", action="store_true", help="run an OUT whose generated C was edited after "
                   "the build (on host, or on the emulator after remaking firmware.elf); the reference is "
                   "refused for it")
    r.set_defaults(func=cmd_run)
    pr = sub.add_parser("prune", help="Taylor-prune filters (structured), fine-tune, write a smaller model")
    pr.add_argument("model", help=".pt2, .pt or .onnx (no Python class needed)")
    pr.add_argument("--data", required=True, help=".npz with arrays x (inputs in the model's layout) and y "
                    "(integer labels): training data for scoring and fine-tuning")
    pr.add_argument("-o", "--output", required=True, help="pruned model, .pt2 or .onnx")
    pr.add_argument("--target-macs", type=float, help="stop when MACs <= this fraction of the original")
    pr.add_argument("--target-params", type=float, help="stop when parameters <= this fraction of the original")
    pr.add_argument("--criterion", default="taylor", choices=["taylor", "taylor2", "magnitude"],
                    help="taylor: first-order Taylor on gates (default); taylor2: second order; magnitude: "
                         "filter weight norm (baseline)")
    pr.add_argument("--val", help=".npz with x, y for validation (default: hold out --holdout of --data)")
    pr.add_argument("--holdout", type=float, default=0.1, help="fraction of --data held out for validation "
                    "when --val is not given (0: none)")
    pr.add_argument("--per-step", type=int, help="channels removed per step (default 3%% of the prunable ones)")
    pr.add_argument("--channel-multiple", type=int, default=1,
                    help="keep a multiple of this many channels in every pruned layer (2 or 4 suits the DSP "
                         "kernels of Cortex-M4/M7/M33, which work on channel pairs)")
    pr.add_argument("--step-batches", type=int, default=20, help="fine-tuning minibatches per step")
    pr.add_argument("--finetune-epochs", type=float, default=1.0, help="fine-tuning after the last step")
    pr.add_argument("--batch", type=int, default=64)
    pr.add_argument("--lr", type=float, default=1e-3)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--checkpoint", help="file written after every pruning step; rerunning the same command "
                    "resumes after the last completed step")
    pr.add_argument("--input-shape", type=_shape, help="input shape, e.g. 1,1,28,28 (for .pt files)")
    pr.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)
    pr.set_defaults(func=cmd_prune)
    f = sub.add_parser("flash", help="program a real board (pyOCD, Cortex-M)")
    f.add_argument("out", help="the output folder of edgepack build (for a board with a flasher)")
    f.add_argument("--probe", metavar="UID", help="debug probe unique ID (pyocd list); needed with several probes")
    f.set_defaults(func=cmd_flash)
    bo = sub.add_parser("boards", help="list the boards")
    bo.set_defaults(func=cmd_boards)
    op = sub.add_parser("ops", help="list the supported operators per frontend, with the weight formats of each")
    op.set_defaults(func=cmd_ops)
    return p


def _terminate(signum, _frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated(signum)


def main(argv=None):
    args = parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)  # clean up like SIGINT (the build's staging folder)
    try:
        args.func(args)
    except EdgepackError as e:
        print(f"edgepack: error: {e}", file=sys.stderr)
        return 1
    except Terminated:
        print("edgepack: terminated (SIGTERM); nothing was left behind", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("edgepack: interrupted; nothing was left behind", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
