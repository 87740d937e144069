"""The report of ``edgepack fit``: fit.json (everything), fit.md (for a person) and pareto.png."""

from __future__ import annotations

import json
from pathlib import Path


def pareto(cands: list, key: str) -> list:
    """The candidates no other beats on both accuracy (higher) and ``key`` (lower)."""
    front = []
    for c in cands:
        if not any((o["accuracy"] >= c["accuracy"] and o[key] <= c[key]) and
                   (o["accuracy"] > c["accuracy"] or o[key] < c[key]) for o in cands):
            front.append(c)
    return sorted(front, key=lambda c: c[key])


def _fmt_cfg(cfg: dict) -> str:
    return ", ".join(f"{l}={f}" for l, f in cfg.items())


def _row(c: dict, chosen) -> str:
    mark = " **chosen**" if chosen and c["level"] == chosen["level"] and c["config"] == chosen["config"] else ""
    return (f"| {c['order']} | {c['level']} | {_fmt_cfg(c['config'])} | {100 * c['accuracy']:.2f} | {c['drop']:+.2f} "
            f"| {c['flash_bytes']:,} | {c['ram_bytes']:,} | {c['instructions']:,.0f} | "
            f"{'yes' if c['meets'] else 'no'} | {c['why']}{mark} |")


def fit_md(s: dict) -> str:
    b = s["budget"]
    budget = ", ".join(x for x in (f"flash <= {b['flash_bytes']:,} B" if b["flash_bytes"] else "",
                                   f"RAM <= {b['ram_bytes']:,} B" if b["ram_bytes"] else "",
                                   f"instructions <= {b['instructions']:,}" if b["instructions"] else "") if x)
    ch = s["chosen"]
    lines = [f"# edgepack fit: {Path(s['model']).name} on {s['board']}", ""]
    if s.get("command"):
        lines += [f"`{s['command']}`", ""]
    lines += [f"- budget: {budget or 'none'}; accuracy drop at most {s['max_drop']:g} points against float "
              f"({100 * s['float_accuracy']:.2f} % on {s['eval_images']} images of {s['eval']})",
              f"- objective: {s['objective']} ({'flash' if s['objective'] == 'size' else 'instructions per inference'})",
              f"- formats searched: {', '.join(s['formats'])}; pruning levels (fractions of the MACs): "
              f"{', '.join(f'{p:g}' for p in s['prune_levels'])}",
              f"- algorithm: {s['algorithm']}",
              f"- instructions measured on the {s['measure_board']} emulator (QEMU -icount), per layer",
              f"- candidates evaluated: {len(s['candidates'])}; search time {s['seconds']:.0f} s in this run"
              + (f", {s['search_seconds_all_runs']:.0f} s over every run on this work folder (it resumes and reuses)"
                 if s.get("search_seconds_all_runs") else ""), ""]
    if ch:
        m = s.get("measured_build") or {}
        lines += ["## Chosen", "",
                  f"Pruning level {ch['level']}: {_fmt_cfg(ch['config'])}", "",
                  "| | accuracy (%) | flash (B) | RAM (B) | instructions |", "|---|---|---|---|---|",
                  f"| predicted by the search | {100 * ch['accuracy']:.2f} | {ch['flash_bytes']:,} | {ch['ram_bytes']:,} "
                  f"| {ch['instructions']:,.0f} |"]
        if m:
            ins = f"{m['instructions']:,.0f}" if m.get("instructions") is not None else "(no emulator)"
            lines.append(f"| measured on the built OUT (ELF, emulator) | - | {m['flash_bytes']:,} | {m['ram_bytes']:,} "
                         f"| {ins} |")
        lines.append("")
    else:
        c = s.get("closest")
        lines += ["## No configuration meets the budget", ""]
        if c:
            lines += [f"Closest: level {c['level']}, {_fmt_cfg(c['config'])}: {100 * c['accuracy']:.2f} % "
                      f"(drop {c['drop']:.2f}), flash {c['flash_bytes']:,} B, RAM {c['ram_bytes']:,} B, "
                      f"{c['instructions']:,.0f} instructions", ""]
    for name, key in (("best_uniform_meeting_all", "meeting the budget and the accuracy drop (best objective)"),
                      ("most_accurate_uniform_within_budget", "within the size / speed budget (most accurate)")):
        u = s.get(name)
        lines.append(f"Best uniform single-format build {key}: " + (
            f"level {u['level']}, {u['why']}: {100 * u['accuracy']:.2f} %, flash {u['flash_bytes']:,} B, "
            f"{u['instructions']:,.0f} instructions" if u else "none"))
    lines.append("")
    for key, lv in s["levels"].items():
        fmts = sorted({f for l in lv["layers"] for f in lv["allowed"][l] if f != "int8"})
        lines += [f"## Level {key}: sensitivity (accuracy % with one layer in the format, the others int8)", "",
                  f"Model {lv['model']}: float {100 * lv['float_accuracy']:.2f} %, all int8 "
                  f"{100 * lv['int8_accuracy']:.2f} %" + (f"; MACs {lv['macs'][0]:,} -> {lv['macs'][1]:,}"
                                                          if lv.get("macs") else ""), "",
                  "| layer | " + " | ".join(fmts) + " |", "|---" * (len(fmts) + 1) + "|"]
        for l in lv["layers"]:
            cells = [f"{100 * lv['sensitivity'][l][f]:.2f}" if f in lv["sensitivity"].get(l, {}) else "-"
                     for f in fmts]
            lines.append(f"| {l} | " + " | ".join(cells) + " |")
        lines += ["", f"Cost model check, level {key} (uniform builds: measured on {s['measure_board']} / predicted):",
                  "", "| format | flash (B) | RAM (B) | instructions |", "|---|---|---|---|"]
        for c in lv["cost_model_check"]:
            m, p = c["measured"], c["predicted"]
            cell = (lambda k, fm: f"{m[k]:{fm}} / {p[k]:{fm}}" if p else f"{m[k]:{fm}}")
            taken = "" if c["taken_by"] else " (no layer takes it: an int8 build)"
            lines.append(f"| {c['format']}{taken} | {cell('flash_bytes', ',')} | {cell('ram_bytes', ',')} | "
                         f"{cell('instructions', ',.0f')} |")
        lines.append("")
    head = ["| # | level | formats | accuracy (%) | drop | flash (B) | RAM (B) | instructions | meets | why |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    lines += ["## Pareto front: accuracy against flash", "", *head, *(_row(c, ch) for c in s["pareto_flash"]), "",
              "## Pareto front: accuracy against instructions", "", *head,
              *(_row(c, ch) for c in s["pareto_instructions"]), "",
              "![accuracy against flash and instructions](pareto.png)", "",
              "## Every candidate evaluated", "", *head, *(_row(c, ch) for c in s["candidates"]), ""]
    if s.get("failed_builds"):
        lines += ["Chosen candidates whose built ELF broke the budget (the next was built):", ""]
        lines += [f"- {k}: {v}" for k, v in s["failed_builds"].items()] + [""]
    return "\n".join(lines)


def write(folder: Path, summary: dict) -> list:
    from .plots import write_pareto

    folder = Path(folder)
    (folder / "fit.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (folder / "fit.md").write_text(fit_md(summary))
    write_pareto(folder, summary)
    return ["fit.json", "fit.md", "pareto.png"]
