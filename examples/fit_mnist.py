"""edgepack fit on MNIST-5k: the example residual CNN widened until its int8 build does not fit a flash budget, then
the per-layer search for the smallest build (objective size) and for the fastest (objective speed) within it.

    python examples/fit_mnist.py [--width 24] [--flash 32K] [--board cortex-m7] [--out build/fit_mnist]
                                 [--prune 1,0.75,0.5] [--max-drop 1.0]

Trains examples/mnist_common.ResidualCNN(width) on the 4,000 MNIST-5k training digits (4 epochs, seed 0), exports
it (.pt2), then runs, with one shared --work folder (the second search reuses every measurement of the first):

    edgepack fit mnist_cnn.pt2 --board BOARD --data train.npz --eval test.npz --flash FLASH \\
        --objective size|speed --work OUT/work -o OUT/size|speed

and a third search, objective speed, under the tighter --tight budget (default 20K). It prints, and writes to
OUT/table.md: the float model, the int8 build, the best uniform single-format build that meets the budget (from
the search's own uniform builds), and the chosen builds, with accuracy from the
emulator on the 1,000 test digits, flash from firmware.elf and instructions per inference (QEMU -icount). The
Pareto tables are in OUT/size/fit.md and OUT/speed/fit.md, the plots in OUT/*/pareto.png.

Measured (width 24, --flash 32K, cortex-m7, 2-core machine): see the closing note of issue 18 and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_common import ResidualCNN, accuracy, float_logits, mnist5k, train  # noqa: E402

from edgepack.fit import fit, parse_bytes  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--flash", default="32K")
    ap.add_argument("--board", default="cortex-m7")
    ap.add_argument("--out", default="build/fit_mnist")
    ap.add_argument("--prune", default="1,0.75,0.5")
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--tight", default="20K", help="a second, tighter flash budget for a third search, objective "
                                                   "speed ('' to skip)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xte, yte = mnist5k()
    path = out / "mnist_cnn.pt2"
    if not path.exists():
        t = time.time()
        torch.manual_seed(0)
        model = train(ResidualCNN(a.width), xtr, ytr, epochs=a.epochs, seed=0, progress=False)
        print(f"trained ResidualCNN({a.width}) in {time.time() - t:.0f} s: float test accuracy "
              f"{100 * accuracy(float_logits(model, xte), yte):.1f} %", flush=True)
        torch.export.save(torch.export.export(model, (torch.from_numpy(xte[:1]),)), path)
        np.savez(out / "train.npz", x=xtr, y=ytr)
        np.savez(out / "test.npz", x=xte, y=yte)
    flash = parse_bytes(a.flash, "--flash")
    prune = tuple(float(v) for v in a.prune.split(","))
    rows = {}
    runs = [("size", a.flash), ("speed", a.flash)] + ([("speed", a.tight)] if a.tight else [])
    for objective, budget in runs:
        name = objective if budget == a.flash else f"{objective}-{budget}"
        t = time.time()
        r = fit(path, a.board, out / "train.npz", out / "test.npz", out / name, flash=parse_bytes(budget, "--flash"),
                max_drop=a.max_drop, objective=objective, prune=prune, work=out / "work",
                command=f"edgepack fit {path} --board {a.board} --data {out / 'train.npz'} --eval "
                        f"{out / 'test.npz'} --flash {budget} --objective {objective} --prune {a.prune} "
                        f"--work {out / 'work'} -o {out / name}")
        rows[name] = (r, time.time() - t, objective, budget)
    s = json.loads((out / "size" / "fit.json").read_text())
    i8 = next(c for c in s["candidates"] if c["level"] == "1" and c["why"] == "all int8")
    uni = s["best_uniform_meeting_all"]
    lines = [f"ResidualCNN({a.width}) on MNIST-5k (1,000 test digits), board {a.board}, budget flash <= {flash:,} B, "
             f"accuracy drop <= {a.max_drop:g} points; float {100 * s['float_accuracy']:.2f} %.", "",
             "| build | pruning level | formats | accuracy (%) | flash (B) | instructions / inference |",
             "|---|---|---|---|---|---|",
             f"| int8 (built; reference) | 1 | all int8 | {100 * i8['accuracy']:.2f} | {i8['flash_bytes']:,} | "
             f"{i8['instructions']:,.0f} |"]
    if uni:  # its uniform build is real: flash and instructions as measured there
        fmt = uni["why"].split()[-1]
        built = next((c["measured"] for c in s["levels"][uni["level"]]["cost_model_check"] if c["format"] == fmt),
                     None)
        fl, ins = (built["flash_bytes"], built["instructions"]) if built else (uni["flash_bytes"], uni["instructions"])
        lines.append(f"| best uniform single format meeting the budget (built; reference) | {uni['level']} | "
                     f"{uni['why']} | {100 * uni['accuracy']:.2f} | {fl:,} | {ins:,.0f} |")
    else:
        lines.append("| best uniform single format meeting the budget | - | none meets it | - | - | - |")
    for name, (r, sec, objective, budget) in rows.items():
        c, rep = r["chosen"], r["report"]
        m = rep["measured"]
        fm = ", ".join(f"{k}={v}" for k, v in c["config"].items())
        lines.append(f"| fit --objective {objective} --flash {budget} (built; {m['built_accuracy_measured_on']}) | "
                     f"{c['level']} | {fm} | {100 * m['built_accuracy']:.2f} | {rep['flash_bytes']:,} | "
                     f"{m.get('instructions_per_inference', float('nan')):,.0f} |")
    lines += ["", "Search time: " + ", ".join(f"{n} {v[1]:.0f} s" for n, v in rows.items())
              + " (the later searches reuse the first's measurements); candidates evaluated: "
              f"{len(s['candidates'])}.",
              "Pareto tables: " + ", ".join(str(out / n / "fit.md") for n in rows) + "; plots: "
              + ", ".join(str(out / n / "pareto.png") for n in rows) + "."]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
