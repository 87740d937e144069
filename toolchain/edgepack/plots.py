"""The build's plots, PNG files next to the report: arena.png (which tensor lives where) and layers.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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


def write_pareto(folder: Path, summary: dict) -> str:
    """pareto.png for ``edgepack fit``: accuracy against flash and against instructions for every candidate
    evaluated (by pruning level), the Pareto fronts as lines, the chosen candidate marked, the accuracy floor
    (float - max drop) and the budgets as dashed lines. Candidates far below the floor sit on the bottom edge
    as down-triangles."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands, chosen = summary["candidates"], summary["chosen"]
    floor = 100 * summary["float_accuracy"] - summary["max_drop"]
    top = max([100 * c["accuracy"] for c in cands] + [100 * summary["float_accuracy"]]) + 0.5
    bottom = min(floor - max(4.0, 4 * summary["max_drop"]), top - 5)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    levels = sorted({c["level"] for c in cands}, key=float, reverse=True)
    budget = summary["budget"]
    for ax, key, front, label in ((axes[0], "flash_bytes", summary["pareto_flash"], "flash (bytes)"),
                                  (axes[1], "instructions", summary["pareto_instructions"],
                                   "instructions per inference")):
        for i, lv in enumerate(levels):
            pts = [c for c in cands if c["level"] == lv]
            hi = [c for c in pts if 100 * c["accuracy"] >= bottom]
            lo = [c for c in pts if 100 * c["accuracy"] < bottom]
            ax.scatter([c[key] for c in hi], [100 * c["accuracy"] for c in hi], s=14, alpha=0.6, color=f"C{i}",
                       label=f"pruning level {lv}")
            ax.scatter([c[key] for c in lo], [bottom + 0.15] * len(lo), s=14, alpha=0.6, color=f"C{i}", marker="v")
        f = sorted(front, key=lambda c: c[key])
        ax.plot([c[key] for c in f], [max(100 * c["accuracy"], bottom + 0.15) for c in f], color="k", lw=1,
                label="Pareto front")
        ax.axhline(floor, color="gray", ls="--", lw=1, label="accuracy floor (float - max drop)")
        if budget.get(key):
            ax.axvline(budget[key], color="red", ls="--", lw=1, label="budget")
        if chosen:
            ax.scatter([chosen[key]], [100 * chosen["accuracy"]], marker="*", s=220, color="red", zorder=5,
                       label="chosen")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom, top)
    axes[0].set_ylabel("accuracy on --eval (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"edgepack fit: {len(cands)} candidates (objective {summary['objective']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(Path(folder) / "pareto.png", dpi=90)
    plt.close(fig)
    return "pareto.png"
