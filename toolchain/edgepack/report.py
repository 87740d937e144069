"""The build report (report.json and report.md): flash, RAM, arena, MACs and the per-layer table, read from
what the build produced (the integer graph, the codegen facts, the object and ELF sizes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import __version__
from .reference.ops import SPARSE_OPS
from .reference.ops_exp import EXP_OPS

WEIGHTED_OPS = ("conv2d_s8", "dwconv2d_s8", "dense_s8", "bconv2d_b1", "bconv2d_b1_s8", "conv_transpose2d_s8",
                "lstm_s8", "gru_s8") + EXP_OPS + SPARSE_OPS
CODEBOOK_OPS = tuple(op for op in EXP_OPS if op.endswith("_expcb"))  # codes + an integer codebook
RNN_OPS = ("lstm_s8", "gru_s8")  # two weight matrices: W_x, W_h


def layer_weight_format(n) -> str | None:
    """The weight format of a layer with weights ("int8", "binary", "exp4", "sparse-csr", ...), else None."""
    return n.attrs.get("weight_format", "int8") if n.op in WEIGHTED_OPS else None


def _macs(q, n):
    t = q.tensors
    y = t[n.outputs[0]].shape
    if n.op == "conv2d_s8":
        o, kh, kw, ci = t[n.inputs[1]].shape
        return int(np.prod(y)) * kh * kw * ci
    if n.op in EXP_OPS + SPARSE_OPS:
        return int(np.prod(y)) * int(np.prod(n.attrs["wshape"][1:]))
    if n.op in ("bconv2d_b1", "bconv2d_b1_s8"):  # binary multiply-accumulates (XNOR-popcount)
        o, kh, kw, _ = t[n.inputs[1]].shape
        return int(np.prod(y[:3])) * o * kh * kw * n.attrs["channels"]
    if n.op == "dwconv2d_s8":
        kh, kw, _ = t[n.inputs[1]].shape
        return int(np.prod(y)) * kh * kw
    if n.op == "dense_s8":
        return int(np.prod(t[n.inputs[1]].shape))
    if n.op in RNN_OPS:  # every step: the gates' W_x x and W_h h
        return int(n.attrs["steps"]) * (int(np.prod(t[n.inputs[1]].shape)) + int(np.prod(t[n.inputs[2]].shape)))
    if n.op == "conv_transpose2d_s8":
        from .reference.ops_spatial import conv_transpose_taps
        return conv_transpose_taps(t[n.inputs[0]].shape, t[n.inputs[1]].shape, y, n.attrs)
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
        wts = [q.tensors[t] for t in n.inputs[1:4]] if n.op in SPARSE_OPS else \
            [q.tensors[t] for t in n.inputs[1:3]] if n.op in RNN_OPS + CODEBOOK_OPS else [w] if w is not None else []
        wbytes = int(sum(t.data.nbytes for t in wts))
        fmt = None
        if w is not None:
            wf = n.attrs.get("weight_format", "int8")
            fmt = {"binary": "binary (1 bit, per-channel scale)", "int8": "int8 per-channel",
                   "sparse-csr": "int8 per-channel, CSR rows (int8 values, uint8/uint16 column indices, int32 "
                                 "row pointers)",
                   "sparse-bitmask": "int8 per-channel, bitmask rows (1-bit mask per weight, int8 nonzero "
                                     "values, int32 row pointers)"}.get(
                wf, f"{wf} (sign x 2^-e x scale)" if wf.startswith("pow2-") else
                f"{wf} (sign x s x q^k: exponential codebook, base q, int16 codebook)")
        layers.append({
            "name": n.name, "op": n.op, "kernel": by_name[n.name]["kernel"],
            "weight_format": fmt,
            "input_shapes": [list(q.tensors[t].shape) for t in n.inputs if q.tensors[t].data is None],
            "output_shape": list(q.tensors[n.outputs[0]].shape),
            "weight_shape": list(n.attrs["wshape"]) if n.op in SPARSE_OPS else
            list(w.shape) if w is not None else None,
            "macs": _macs(q, n),
            "weight_bytes": wbytes,
            # code bytes of the layer's kernel function in firmware.elf (nm -S; shared kernels count in each
            # layer using them); None for host builds
            "kernel_code_bytes": (elf or {}).get("symbols", {}).get(by_name[n.name]["kernel"]) if elf else None,
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
            "memory_note": by_name[n.name].get("memory_note"),
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
        ram = sizes["data"] + sizes["bss"]  # the arena is a static buffer: it is in bss
        measured = "host objects of the model (size -A: flash = text+rodata+data, RAM = data+bss)"
        ram_note = ("static data and bss, which holds the arena; input and output buffers belong to the caller; "
                    "no stack on the host")
    return {
        "edgepack": __version__, "command": command, "model": str(model_path),
        "model_sha256": g.meta.get("source", {}).get("sha256"), "board": board["name"],
        "flash_bytes": flash, "ram_bytes": ram, "sizes_measured_from": measured, "ram_note": ram_note,
        "board_flash_bytes": board.get("flash_bytes") or None, "board_ram_bytes": board.get("ram_bytes") or None,
        "elf_sections": elf.get("sections") if elf else None,
        "weights_bytes": sum(l["weight_bytes"] for l in layers),
        "const_bytes": facts["const_bytes"], "object_sizes": sizes,
        "arena_bytes": facts["arena_bytes"], "liveness_bound_bytes": facts["liveness_bound_bytes"],
        "liveness_bound_without_views_bytes": facts.get("liveness_bound_without_views_bytes"),
        "tensor_liveness_bound_bytes": facts.get("tensor_liveness_bound_bytes"),
        "largest_scratch_bytes": facts.get("largest_scratch_bytes", 0),
        "activations_total_bytes": facts["activations_total_bytes"],
        "arena_over_bound": round(facts["arena_over_bound"], 4), "arena_plan": facts["arena_plan"],
        "input_bytes": facts["input_bytes"], "output_bytes": facts["output_bytes"],
        "macs": sum(l["macs"] for l in layers), "float_parameters": params,
        "kernels": facts["kernels"], "kernel_codegen_seconds": round(facts["kernel_seconds"], 3),
        "quantization": q.meta.get("quantization", {}), "layers": layers, "arena": facts["buffers"],
    }


def _v(x) -> str:
    return "" if x is None else str(x)


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
    for w in r.get("warnings") or []:
        lines.append(f"| warning | {w} |")
    for k, v in (r.get("measured") or {}).items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "| # | layer | op | kernel | schedule | weights | input shapes | output | MACs | weight bytes "
              "| kernel code bytes | arena offset | scratch (offset) | instructions | MAC/instr |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, l in enumerate(r["layers"]):
        off = l["arena_offset"] if l["arena_offset"] is not None else l["output_storage"]
        ins = f"{l['instructions']:.0f}" if l.get("instructions") is not None else ""
        mpi = f"{l['macs'] / l['instructions']:.3f}" if ins and l["macs"] and l["instructions"] else ""
        scr = f"{l['scratch_bytes']} ({l['scratch_offset']})" if l.get("scratch_bytes") else ""
        lines.append(f"| {i} | {l['name']} | {l['op']} | {l['kernel']} | {l.get('schedule', 'plain')} | "
                     f"{l['weight_format'] or ''} | {l['input_shapes']} | {l['output_shape']} | {l['macs']} | "
                     f"{l['weight_bytes']} | {_v(l.get('kernel_code_bytes'))} | {off} | {scr} | {ins} | {mpi} |")
    notes = [f"- {l['name']} ({l['op']}): {l['memory_note']}" for l in r["layers"] if l.get("memory_note")]
    if notes:
        lines += ["", "Memory plan: where a concat or slice is a view (no copy), and why a copy is made:", *notes]
    for p in plots:
        lines += ["", f"![{p}]({p})"]
    lines += ["", "Quantization card: quantization_card.md (`edgepack card OUT`)."]
    return "\n".join(lines) + "\n"
