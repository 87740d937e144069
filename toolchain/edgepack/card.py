"""The quantization card: what a build did and what it cost (Garg, Jain, Lou, Nahmias, "Confounding Tradeoffs
for Neural Network Quantization", 2021).

Every field is read from the build itself -- the integer graph's nodes and attributes, the quantizer's record,
the report measured from the built image, the model's provenance sidecar and, with ``--eval``, outputs measured
on the board's emulator or the host -- never from defaults typed into a template. A choice the build did not
make (no residual add, no pruning recorded) says so.

``quantization_card.json`` is the card; ``quantization_card.md`` renders it; :func:`diff` compares two.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import __version__
from .report import WEIGHTED_OPS  # the ops with weights: one list for the report and the card

_FORMAT_TEXT = {
    "int8": "int8",
    "binary": "binary (1 bit)",
    "sparse-csr": "int8 in sparse CSR rows",
    "sparse-bitmask": "int8 in sparse bitmask rows",
}


def _fmt(n) -> str:
    f = n.attrs.get("weight_format", "int8")
    if f.startswith("pow2-"):
        return f"{f} (power-of-two exponent codes: sign x 2^-e x scale, {f[5:]} bits)"
    if f.startswith("exp"):
        return f"{f} (exponential codebook, base q: sign x s x q^k, {f[3:]} bits)"
    return _FORMAT_TEXT.get(f, f)


def _codebook_fields(n) -> dict:
    """Base q, codebook size and granularity of an exponent-coded layer (expN and pow2-N), else {}."""
    f = n.attrs.get("weight_format", "int8")
    if f.startswith("pow2-"):
        return {"base": 0.5, "codebook_size": (1 << (int(f[5:]) - 1)) - 1,
                "codebook": f"none: powers of two, {n.attrs['exp_levels']} levels in use, decoded by shifts",
                "codebook_granularity": "per layer (one exponent window; the scale's granularity as above)"}
    if not f.startswith("exp"):
        return {}
    bases = n.attrs["w_base"]
    rows = n.attrs["codebook_rows"]
    return {"base": round(float(bases[0]), 6) if rows == 1 else
            {"min": round(float(min(bases)), 6), "max": round(float(max(bases)), 6),
             "median": round(float(np.median(bases)), 6)},
            "codebook_size": (1 << (n.attrs["bits"] - 1)) - 1,
            "codebook": f"int16, {rows} row(s) of {1 << (n.attrs['bits'] - 1)} entries (0 and "
                        f"round(q^k x 2^{n.attrs['codebook_shift']}))",
            "codebook_granularity": "per channel" if rows > 1 else
            "per layer" if len(set(n.attrs["w_scale"])) == 1 else "base per layer, scale per channel"}


def _scale_type(n) -> str:
    f = n.attrs.get("weight_format", "int8")
    if f == "binary":
        return "float per-channel alpha, folded into integer thresholds (bit output) or the requantization"
    if f.startswith("pow2-"):
        return "powers of two x a float scale; the float part applied by the Q31 multiplier + shift"
    if f.startswith("exp"):
        return ("integer codebook round(q^k x 2^P) x a float scale s / 2^P; the float part applied by the Q31 "
                "multiplier + shift")
    return "float, applied as a Q31 fixed-point multiplier + shift per output channel"


# the arithmetic of the element-wise and data-movement ops, for the ops a build uses
OP_RULES = {
    "add_s8": "TFLite ADD / SUB, n-ary: inputs rescaled to twice the largest input scale with a left shift (20 bits; "
              "fewer past 16 inputs), summed with signs, requantized to the output; broadcasting; a constant operand "
              "int8 asymmetric per-tensor",
    "mul_s8": "TFLite MUL: (a - a_zp)(b - b_zp) requantized by s_a s_b / s_y; broadcasting (per-channel scaling of "
              "squeeze-excite); a constant operand int8 asymmetric per-tensor",
    "lut_s8": "256-entry int8 lookup table per layer, built from the float function (or a fused chain of element-wise "
              "ops on one input) at every int8 input, correctly rounded (nearest, ties to even); output scale fixed "
              "for sigmoid / hardsigmoid (1/256, -128) and tanh (1/128, 0) as TFLite, else calibrated min-max",
    "prelu_s8": "TFLite PRELU: slopes int8 symmetric per-tensor, one requantization for x >= 0 (s_x / s_y) and one "
                "for x < 0 (s_x s_alpha / s_y)",
    "concat_s8": "TFLite CONCATENATION: output scale calibrated; inputs whose producer sets its own scale are "
                 "produced in the output's (as TFLite's converter does), the others requantized to it (TFLite "
                 "int8 QUANTIZE); where the layout allows, producers write straight into their slice (see layers)",
    "slice_s8": "keeps the input's scale (a view of the input where possible); requantized where it feeds a concat "
                "in another scale",
    "pad_s8": "TFLite PAD: output keeps the input's scale and zero point, the value quantized in them (the input's "
              "calibrated range widened to hold it)",
}


def _granularity(n, meta) -> str:
    if n.attrs.get("weight_format") == "binary":
        return "per-channel (alpha)"
    if n.op in ("lstm_s8", "gru_s8"):
        return "per-tensor, one scale per gate matrix (TFLite LSTM)"
    return "per-tensor" if meta.get("weight_scale") == "per-layer" else "per-channel"


def layer_rows(q, report) -> list:
    rep = {l["name"]: l for l in report["layers"]}
    meta = q.meta.get("quantization", {})
    rows = []
    for n in q.nodes:
        if n.op == "reshape":
            continue
        x = q.tensors[n.inputs[0]]
        y = q.tensors[n.outputs[0]]
        row = {"name": n.name, "op": n.op, "kernel": rep[n.name]["kernel"], "macs": rep[n.name]["macs"],
               "input_bits": 1 if n.op.startswith("bconv") else 8,
               "output_bits": 1 if n.op in ("bconv2d_b1", "binarize_s8") else 8,
               "activations": "asymmetric int8, per-tensor scale and zero point"
               if n.op not in ("bconv2d_b1", "binarize_s8") else "1 bit (sign), packed 32 channels per word",
               "input_zero_point": x.quant.zero_point if x.quant else None,
               "output_zero_point": y.quant.zero_point if y.quant else None,
               "fused_activation": n.attrs.get("fused_activation"), "folded_batchnorm": n.attrs.get("folded_bn")}
        if n.op in WEIGHTED_OPS:
            row.update({"weight_format": _fmt(n), "granularity": _granularity(n, meta),
                        "weights_symmetric": True, "scale_type": _scale_type(n),
                        "weight_bytes": rep[n.name]["weight_bytes"],
                        "bias": "int32, scale = input scale x weight scale" if n.op not in ("bconv2d_b1",)
                        else "folded into per-channel integer thresholds"})
            row.update(_codebook_fields(n))
            if rep[n.name].get("kernel_code_bytes") is not None:
                row["kernel_code_bytes"] = rep[n.name]["kernel_code_bytes"]
            if rep[n.name].get("sparse_note"):
                row["sparse_note"] = rep[n.name]["sparse_note"]
        if n.op == "binarize_s8":
            row["sign_threshold"] = n.attrs.get("threshold")  # int16 per channel: bit = q < zp + ceil(b_c / s)
        if n.op == "lut_s8":
            row.update({"function": n.attrs.get("function"), "output_quantization": n.attrs.get("output_quant"),
                        "fused_ops": n.attrs.get("fused_nodes")})
        if n.op == "pad_s8":
            row["pad_value"] = {"float": n.attrs.get("float_value"), "int8": n.attrs.get("value"),
                                "error": n.attrs.get("value_error")}
        if n.attrs.get("affine_bn"):
            row["standalone_batchnorm"] = n.attrs["affine_bn"]
        if rep[n.name].get("memory_note"):
            row["memory"] = rep[n.name]["memory_note"]
        if rep[n.name].get("instructions") is not None:
            row["instructions"] = rep[n.name]["instructions"]
        rows.append(row)
    return rows


def _used(q, *ops):
    return any(n.op in ops for n in q.nodes)


def _spatial_fields(q) -> dict:
    """Resize, layout (transposes) and transposed / grouped convolution: what the build did for each."""
    resizes = [f"{n.name}: {n.op[7:-3]}, {n.attrs.get('index_rule')}" for n in q.nodes if n.op.startswith("resize_")]
    moves = [n.name for n in q.nodes if n.op == "transpose_s8"]
    grouped = [f"{n.name} ({n.attrs['groups']} groups)" for n in q.nodes if n.attrs.get("groups", 1) != 1]
    return {
        "resize": resizes or "none in the model",
        "resize_quantization": "output keeps the input's scale and zero point (TFLite int8 resizes)"
        if resizes else "none",
        "transposes": ("copies on the device (transpose_s8): " + ", ".join(moves)) if moves else
        "none on the device (folded into the boundary, the dense weights or the NHWC memory order)",
        "transposed_convolution": "TFLite TRANSPOSE_CONV: per-channel int8 weights (O, KH, KW, I), int32 bias, "
        "Q31 requantization" if _used(q, "conv_transpose2d_s8") else "none",
        "grouped_convolution": grouped or "none",
        "recurrent": [f"{n.name}: {n.op[:-3].upper()}, {n.attrs['steps']} steps, hidden {n.attrs['hidden']}, int8 "
                      f"hidden state, {n.attrs['gates']}"
                      + (f", int16 cell state Q{15 - n.attrs['cell_frac']}.{n.attrs['cell_frac']}"
                         if n.op == "lstm_s8" else "") for n in q.nodes if n.op in ("lstm_s8", "gru_s8")]
        or "none in the model",
    }


def make_card(g, q, report: dict, board: dict, provenance: list, measured: dict, fit: dict | None = None) -> dict:
    """The card of a build: ``g`` the float graph, ``q`` the integer graph, ``report`` the build report,
    ``provenance`` the model's recorded steps, ``measured`` what the build ran (see build.measure), ``fit`` the
    record of the ``edgepack fit`` search that chose the build (None: chosen by hand)."""
    meta = q.meta.get("quantization", {})
    layers = layer_rows(q, report)
    weighted = [l for l in layers if "weight_format" in l]
    post = meta.get("binarized_post_training") or []
    trained_binary = [n.name for n in q.nodes if n.attrs.get("weight_format") == "binary" and n.name not in post]
    methods = [s.get("method") for s in provenance]
    if trained_binary:
        methods.append("binary layers from training (sign + two-valued weights in the model file)")
    folded = [n.attrs["folded_bn"] for n in g.nodes if n.attrs.get("folded_bn")]
    affine = [n.attrs["affine_bn"] for n in g.nodes if n.attrs.get("affine_bn")]
    src = g.meta.get("source", {})
    card = {
        "edgepack": __version__,
        "command": report["command"],
        "model": {"path": src.get("path", report["model"]), "format": src.get("format"),
                  "sha256": src.get("sha256")},
        "board": {"name": board["name"], "cpu": board.get("cpu"), "arch": board.get("arch"),
                  "toolchain": board.get("toolchain_prefix"), "emulator": board.get("emulator"),
                  "emulator_machine": board.get("emulator_machine")},
        "weights": {
            "option": meta.get("weights_option", "int8"),
            "formats_used": sorted({l["weight_format"] for l in weighted}),
            "granularity": meta.get("weight_scale"),
            "first_layer": weighted[0]["weight_format"] if weighted else None,
            "last_layer": weighted[-1]["weight_format"] if weighted else None,
            "binarized_after_training": post,
            "binary_from_training": trained_binary,
        },
        "activations": "int8 asymmetric per-tensor (scale, zero point)"
        + ("; 1-bit between binary layers" if _used(q, "bconv2d_b1") else ""),
        "batchnorm": {"folded": folded, "standalone": affine,
                      "how": "folded into the preceding conv / dense in float, before quantization"
                      + ("; the others (no conv / dense before them) a per-channel affine run as a 1x1 depthwise "
                         "conv (int8 per-channel weight, int32 bias)" if affine else "")
                      if folded or affine else "no batchnorm in the model"},
        "calibration": {"source": meta.get("calibration_source"), "images": meta.get("calibration_images"),
                        "method": (meta.get("calibration_method", "") + " over the calibration batch, range "
                                   "widened to include 0")},
        "rounding": meta.get("rounding"),
        "requantization": "int32 accumulator; per-channel Q31 multiplier and shift; saturating rounding "
                          "doubling high multiply, then rounding divide by a power of two (TFLite / CMSIS-NN)",
        "bias": "int32" if weighted else None,
        "residual_add": OP_RULES["add_s8"] if _used(q, "add_s8") else "none in the model",
        "elementwise_and_data_movement": {op: rule for op, rule in OP_RULES.items() if op != "add_s8" and _used(q, op)}
        or "none in the model",
        "lookup_tables": [{"layer": l["name"], "function": l["function"], "output": l["output_quantization"]}
                          for l in layers if l["op"] == "lut_s8"] or "none in the model",
        "pooling": {"max": "on int8 values, output keeps the input's scale and zero point"
                    if _used(q, "maxpool_s8") else "none",
                    "average": "integer sum of the raw values over the window (zero point for the padded taps it "
                    "counts), round-half-away division (TFLite), output keeps the input's scale and zero point" if _used(q, "avgpool_s8") else "none"},
        "softmax": "int8 in, exp by a 256-entry 16-bit lookup table, output scale 1/256, zero point -128"
        if _used(q, "softmax_s8") else "none",
        **_spatial_fields(q),
        "pruning": [s for s in provenance if "prun" in str(s.get("method", "")).lower()] or "none recorded",
        "training_methods": methods or "none recorded",
        "provenance": provenance,
        "kernels": {l["name"]: l["kernel"] for l in layers},
        "bit_exactness": {
            "specification": "edgepack.reference (numpy integer ops): every kernel's arithmetic",
            "kernels_tested_against_it": "host (cffi) and the cortex-m7, cortex-m33, rpi4 and rpi-armhf "
                                         "emulators (the DSP schedules' kernels also on cortex-m4), random "
                                         "shapes (tests/test_ops_diff.py, tests/test_boards_diff.py)",
            "this_build": measured.get("bit_exact"),
        },
        "fit": fit or "none (formats chosen by the command line)",
        "layers": layers,
        "measured": {
            "flash_bytes": report["flash_bytes"], "ram_bytes": report["ram_bytes"],
            "arena_bytes": report["arena_bytes"], "weights_bytes": report["weights_bytes"],
            "macs": report["macs"], "parameters": report["float_parameters"],
            "sizes_measured_from": report["sizes_measured_from"],
            **{k: v for k, v in measured.items() if k != "bit_exact"},
        },
    }
    return card


# ---- rendering -----------------------------------------------------------------------------------------
def _v(x) -> str:
    if isinstance(x, float):
        return f"{x:.4f}" if abs(x) < 10 else f"{x:.1f}"
    if isinstance(x, (list, tuple)):
        return ", ".join(_v(v) for v in x) if x else "none"
    if isinstance(x, dict):
        return "; ".join(f"{k}: {_v(v)}" for k, v in x.items())
    return "" if x is None else str(x)


def _fit_text(f) -> str:
    if not isinstance(f, dict):
        return f or "none (formats chosen by the command line)"
    budget = ", ".join(f"{k} <= {v:,}" for k, v in f["budget"].items() if v is not None) or "none"
    return (f"{f['algorithm']}; objective {f['objective']}; budget {budget}; max accuracy drop "
            f"{f['max_drop']} points against float {f['float_accuracy']:.4f} on {f['eval']}; "
            f"{f['candidates_evaluated']} candidates evaluated; chosen: {_v(f['chosen'])}; details in {f['report']}")


def card_md(c: dict) -> str:
    m = c["measured"]
    lines = [f"# Quantization card: {Path(c['model']['path']).name} on {c['board']['name']}", "",
             f"`{c['command']}` (edgepack {c['edgepack']})", "",
             "Fields from Garg et al., \"Confounding Tradeoffs for Neural Network Quantization\" (2021), filled "
             "from what this build did.", "", "## Design choices", "", "| field | value |", "|---|---|"]
    rows = [
        ("model", f"{c['model']['path']} ({c['model']['format']}), sha256 {c['model']['sha256']}"),
        ("board", _v(c["board"])),
        ("weight option", c["weights"]["option"]),
        ("weight formats used", _v(c["weights"]["formats_used"])),
        ("weight granularity", c["weights"]["granularity"]),
        ("weights", "symmetric (zero point 0), int8 in [-127, 127] where int8"),
        ("first layer", c["weights"]["first_layer"]), ("last layer", c["weights"]["last_layer"]),
        ("binarized after training", _v(c["weights"]["binarized_after_training"])),
        ("binary layers from training", _v(c["weights"]["binary_from_training"])),
        ("activations", c["activations"]),
        ("batchnorm", f"{c['batchnorm']['how']}: {_v(c['batchnorm']['folded'])}"),
        ("calibration", _v(c["calibration"])),
        ("rounding", c["rounding"]), ("requantization", c["requantization"]), ("bias", c["bias"]),
        ("residual add", c["residual_add"]),
        ("element-wise and data movement", _v(c.get("elementwise_and_data_movement"))),
        ("lookup tables", _v(c["lookup_tables"]) if isinstance(c.get("lookup_tables"), str) else "; ".join(
            f"{t['layer']}: {t['function']} ({t['output']})" for t in c.get("lookup_tables", []))),
        ("pooling", _v(c["pooling"])), ("softmax", c["softmax"]),
        *((k.replace("_", " "), _v(c[k])) for k in ("resize", "resize_quantization", "transposes",
                                                      "transposed_convolution", "grouped_convolution", "recurrent")
          if k in c),
        ("pruning", _v(c["pruning"]) if isinstance(c["pruning"], str) else
         "; ".join(_v({k: s.get(k) for k in ("method", "criterion", "macs_before", "macs_after", "params_before",
                                             "params_after")}) for s in c["pruning"])),
        ("training-time methods", _v(c["training_methods"])),
        ("format search (edgepack fit)", _fit_text(c.get("fit"))),
        ("bit-exactness", _v(c["bit_exactness"])),
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Measured", "", "| what | value |", "|---|---|"]
    lines += [f"| {k} | {_v(v)} |" for k, v in m.items()]
    lines += ["", "## Layers", "", "| layer | op | kernel | weights | granularity | in/out bits | MACs | weight bytes "
              "| fused | folded BN |", "|---|---|---|---|---|---|---|---|---|---|"]
    for l in c["layers"]:
        lines.append(f"| {l['name']} | {l['op']} | {l['kernel']} | {l.get('weight_format', '')} | "
                     f"{l.get('granularity', '')} | {l['input_bits']}/{l['output_bits']} | {l['macs']} | "
                     f"{l.get('weight_bytes', '')} | {l['fused_activation'] or ''} | {l['folded_batchnorm'] or ''} |")
    notes = [f"- {l['name']}: {l['sparse_note']}" for l in c["layers"] if l.get("sparse_note")]
    if notes:
        lines += ["", "Sparse storage notes:", *notes]
    cbs = [f"- {l['name']}: base q {l['base']}, {l['codebook_size']} levels, {l['codebook_granularity']}; "
           f"{l['codebook']}" for l in c["layers"] if "codebook_size" in l]
    if cbs:
        lines += ["", "Exponent codes (base, codebook size, granularity):", *cbs]
    mem = [f"- {l['name']}: {l['memory']}" for l in c["layers"] if l.get("memory")]
    if mem:
        lines += ["", "Memory plan (concat / slice views):", *mem]
    return "\n".join(lines) + "\n"


def write(folder: Path, card: dict):
    folder = Path(folder)
    (folder / "quantization_card.json").write_text(json.dumps(card, indent=1, default=str) + "\n")
    (folder / "quantization_card.md").write_text(card_md(card))


def load(folder) -> dict:
    from .errors import EdgepackError

    p = Path(folder) / "quantization_card.json"
    if not p.is_file():
        raise EdgepackError(f"{folder}: no quantization_card.json; is it the output folder of edgepack build?")
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise EdgepackError(f"{p}: not a readable card ({e})") from None


# ---- comparing two builds ------------------------------------------------------------------------------
def _flatten(x, prefix="") -> dict:
    out = {}
    if isinstance(x, dict):
        for k, v in x.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(x, list) and x and all(isinstance(v, dict) and "name" in v for v in x):
        for v in x:
            out.update(_flatten({k: w for k, w in v.items() if k != "name"}, f"{prefix}[{v['name']}]"))
    else:
        out[prefix] = x
    return out


def diff(a: dict, b: dict, ignore=("command", "edgepack", "provenance")) -> list:
    """[(field, value in a, value in b)] for every field that differs (layers matched by name)."""
    fa = {k: v for k, v in _flatten(a).items() if k.split(".")[0].split("[")[0] not in ignore}
    fb = {k: v for k, v in _flatten(b).items() if k.split(".")[0].split("[")[0] not in ignore}
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def diff_text(a: dict, b: dict, name_a: str, name_b: str) -> str:
    rows = diff(a, b)
    if not rows:
        return f"the cards of {name_a} and {name_b} agree on every field\n"
    w = max(len(r[0]) for r in rows)
    lines = [f"{'field':{w}s} | {name_a} | {name_b}", "-" * (w + 3 + len(name_a) + 3 + len(name_b))]
    for k, va, vb in rows:
        lines.append(f"{k:{w}s} | {_v(va) if va is not None else '-'} | {_v(vb) if vb is not None else '-'}")
    return "\n".join(lines) + "\n"
