"""CMSIS-NN on the same layers as an edgepack build, on the same emulated board, counted the same way.

For an edgepack output folder OUT built for a Cortex-M board, :func:`run` writes a firmware that runs the
model layer by layer through ARM's CMSIS-NN s8 functions (the kernels under TensorFlow Lite Micro) with the
graph's own constants (weights, biases, per-channel multipliers and shifts, zero points as offsets,
activation ranges), built with the board's compiler flags against a CMSIS-NN checkout, linked with edgepack's
Cortex-M harness (the same SysTick counting under QEMU -icount), and returns its raw outputs and the
instructions of each layer. Layers CMSIS-NN has no function for with the same arithmetic (softmax with
edgepack's table, clamp, average pooling that counts the padding) run edgepack's own kernel and are marked.

Nothing of CMSIS-NN is in this project: the caller passes the checkout (github ARM-software/CMSIS-NN) and the
CMSIS_6 Core include folder; CMSIS-NN is compiled from there into a per-board library in the work folder.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgepack.codegen.aot import CTYPES, _c_array, cname
from edgepack.codegen.memplan import storage_root
from edgepack.graph import Graph
from edgepack.runners import Model, emulator

SOURCE_DIRS = ("ConvolutionFunctions", "FullyConnectedFunctions", "NNSupportFunctions", "PoolingFunctions",
               "BasicMathFunctions")
SCRATCH_BYTES = 32768  # CMSIS-NN's per-layer buffer (the *_get_buffer_size functions are checked against it)
CMSIS_OPS = ("conv2d_s8", "dwconv2d_s8", "dense_s8", "maxpool_s8", "avgpool_s8", "add_s8")


def library(nn_dir: Path, core_dir: Path, board: dict, work: Path) -> Path:
    """Compile CMSIS-NN's integer sources with the board's flags into work/cmsis-nn-<board>/libcmsisnn.a."""
    lib_dir = work / f"cmsis-nn-{board['name']}"
    lib = lib_dir / "libcmsisnn.a"
    if lib.exists():
        return lib
    lib_dir.mkdir(parents=True, exist_ok=True)
    gcc = board["toolchain_prefix"] + "gcc"
    objs = []
    for d in SOURCE_DIRS:
        for src in sorted((nn_dir / "Source" / d).glob("*.c")):
            if re.search(r"_(f16|f32|flt)\.c$", src.name):
                continue
            obj = lib_dir / (src.stem + ".o")
            subprocess.run([gcc, *board["cflags"], "-ffunction-sections", "-fdata-sections",
                            "-I", str(nn_dir / "Include"), "-I", str(core_dir), "-c", str(src), "-o", str(obj)],
                           check=True, capture_output=True, text=True)
            objs.append(str(obj))
    subprocess.run([board["toolchain_prefix"] + "ar", "rcs", str(lib), *objs], check=True)
    return lib


def _storage(g: Graph, report: dict) -> dict:
    """Tensor -> C pointer expression: the harness input / output or the arena offset edgepack planned."""
    find = storage_root(g)
    offsets = {}
    for b in report["arena"]:
        if b.get("kind", "tensor") == "tensor":
            for t in b["tensors"]:
                offsets[t] = b["offset"]
    inp, outs = find(g.inputs[0]), {find(t) for t in g.outputs}
    where = {}
    for t, tensor in g.tensors.items():
        if tensor.data is not None:
            continue
        r = find(t)
        where[t] = "input" if r == inp else "output" if r in outs else f"(ep_arena + {offsets[r]})" \
            if r in offsets else None
    return where


def _dims(n, h, w, c):
    return f"{{{n}, {h}, {w}, {c}}}"


def _layer_call(li, n, g, ptr, sym, kernel_of):
    """(C statements of layer li, whether CMSIS-NN runs it)."""
    a = n.attrs
    t = g.tensors
    x = ptr(n.inputs[0])
    y = ptr(n.outputs[0])
    prof = f"ep_profile_begin({li});\n        rc |= {{call}};\n        ep_profile_end({li});"
    if n.op in ("conv2d_s8", "dwconv2d_s8"):
        _, H, W, C = t[n.inputs[0]].shape
        _, OH, OW, O = t[n.outputs[0]].shape
        (SH, SW), (PT, PL, _, _), (DH, DW) = a["strides"], a["pads"], a["dilations"]
        w, b, m, s = (sym(v) for v in n.inputs[1:5])
        act = f"{{{a['act_min']}, {a['act_max']}}}"
        if n.op == "conv2d_s8":
            o, kh, kw, _ = t[n.inputs[1]].shape
            params = (f"cmsis_nn_conv_params p = {{{-a['in_zp']}, {a['out_zp']}, {{{SW}, {SH}}}, {{{PL}, {PT}}}, "
                      f"{{{DW}, {DH}}}, {act}}};")
            fd, fn, sz = _dims(o, kh, kw, C), "arm_convolve_wrapper_s8", "arm_convolve_wrapper_s8_get_buffer_size"
        else:
            kh, kw, o = t[n.inputs[1]].shape
            params = (f"cmsis_nn_dw_conv_params p = {{{-a['in_zp']}, {a['out_zp']}, {int(a.get('depth_multiplier', 1))}, "
                      f"{{{SW}, {SH}}}, {{{PL}, {PT}}}, {{{DW}, {DH}}}, {act}}};")
            fd, fn = _dims(1, kh, kw, o), "arm_depthwise_conv_wrapper_s8"
            sz = "arm_depthwise_conv_wrapper_s8_get_buffer_size"
        return (f"""    {{  /* {li}: {n.name} ({n.op}) */
        {params}
        cmsis_nn_per_channel_quant_params q = {{(int32_t *){m}, (int32_t *){s}}};
        cmsis_nn_dims id = {_dims(1, H, W, C)}, fd = {fd}, bd = {_dims(1, 1, 1, O)}, od = {_dims(1, OH, OW, O)};
        if ({sz}(&p, &id, &fd, &od) > EP_CMSIS_SCRATCH) return -2;
        cmsis_nn_context ctx = {{ep_cmsis_scratch, EP_CMSIS_SCRATCH}};
        {prof.format(call=f"{fn}(&ctx, &p, &q, &id, {x}, &fd, {w}, &bd, {b}, &od, {y})")}
    }}
""", True)
    if n.op == "dense_s8":
        F = int(np.prod(t[n.inputs[0]].shape[1:]))
        O = t[n.outputs[0]].shape[-1]
        w, b, m, s = (sym(v) for v in n.inputs[1:5])
        return (f"""    {{  /* {li}: {n.name} ({n.op}) */
        cmsis_nn_fc_params p = {{{-a['in_zp']}, 0, {a['out_zp']}, {{{a['act_min']}, {a['act_max']}}}}};
        cmsis_nn_per_channel_quant_params q = {{(int32_t *){m}, (int32_t *){s}}};
        cmsis_nn_dims id = {_dims(1, 1, 1, F)}, fd = {_dims(F, 1, 1, O)}, bd = {_dims(1, 1, 1, O)}, od = {_dims(1, 1, 1, O)};
        if (arm_fully_connected_s8_get_buffer_size(&fd) > EP_CMSIS_SCRATCH) return -2;
        cmsis_nn_context ctx = {{ep_cmsis_scratch, EP_CMSIS_SCRATCH}};
        {prof.format(call=f"arm_fully_connected_per_channel_s8(&ctx, &p, &q, &id, {x}, &fd, {w}, &bd, {b}, &od, {y})")}
    }}
""", True)
    if n.op in ("maxpool_s8", "avgpool_s8") and not (n.op == "avgpool_s8" and a["count_include_pad"]
                                                       and any(a["pads"])):
        _, H, W, C = t[n.inputs[0]].shape
        _, OH, OW, _ = t[n.outputs[0]].shape
        (SH, SW), (PT, PL, _, _) = a["strides"], a["pads"]
        KH, KW = a["kernel"]
        fn = "arm_max_pool_s8" if n.op == "maxpool_s8" else "arm_avgpool_s8"
        check = ("" if n.op == "maxpool_s8" else
                 f"if (arm_avgpool_s8_get_buffer_size({OW}, {C}) > EP_CMSIS_SCRATCH) return -2;\n        ")
        return (f"""    {{  /* {li}: {n.name} ({n.op}) */
        cmsis_nn_pool_params p = {{{{{SW}, {SH}}}, {{{PL}, {PT}}}, {{-128, 127}}}};
        cmsis_nn_dims id = {_dims(1, H, W, C)}, fd = {_dims(1, KH, KW, 1)}, od = {_dims(1, OH, OW, C)};
        {check}cmsis_nn_context ctx = {{ep_cmsis_scratch, EP_CMSIS_SCRATCH}};
        {prof.format(call=f"{fn}(&ctx, &p, &id, {x}, &fd, &od, {y})")}
    }}
""", True)
    if (n.op == "add_s8" and len(n.inputs) == 2 and list(a["signs"]) == [1, 1]
            and all(tuple(t[v].shape) == tuple(t[n.outputs[0]].shape) and t[v].data is None for v in n.inputs)):
        # a two-input add of same-shaped activations: CMSIS-NN's elementwise add (its sub, n-ary and
        # broadcasting forms are not that function)
        N = int(np.prod(t[n.outputs[0]].shape[1:]))
        zp, m, sh = a["zps"], a["mults"], a["shifts"]
        call = (f"arm_elementwise_add_s8({x}, {ptr(n.inputs[1])}, {-zp[0]}, {m[0]}, {sh[0]}, "
                f"{-zp[1]}, {m[1]}, {sh[1]}, {a['left_shift']}, {y}, {a['out_zp']}, "
                f"{a['out_mult']}, {a['out_shift']}, {a['act_min']}, {a['act_max']}, {N})")
        return f"    {{  /* {li}: {n.name} ({n.op}) */\n        {prof.format(call=call)}\n    }}\n", True
    # no CMSIS-NN function with this arithmetic: edgepack's own (plain) kernel, same arguments as model.c
    args = [sym(v) if g.tensors[v].data is not None else ptr(v) for v in list(n.inputs) + list(n.outputs)]
    call = f"(({kernel_of(n)}({', '.join(args)})), 0)"
    return f"    {{  /* {li}: {n.name} ({n.op}): edgepack kernel */\n        {prof.format(call=call)}\n    }}\n", False


def write_harness(out: Path, folder: Path, nn_dir: Path, core_dir: Path):
    """Write the CMSIS-NN firmware sources for OUT into ``folder``; return per-layer flags (CMSIS-NN or not)."""
    out, folder = Path(out), Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    g = Graph.load(out)
    report = json.loads((out / "report.json").read_text())
    where = _storage(g, report)
    for f in ("model.h", "graph.json", "graph.npz", "board.json"):
        shutil.copy2(out / f, folder / f)
    shutil.copytree(out / "runtime", folder / "runtime")
    shutil.copytree(out / "firmware", folder / "firmware")
    (folder / "kernels").mkdir()
    syms, arrays = {}, []
    for t in g.tensors.values():
        if t.data is not None:
            syms[t.name] = "ep_cm_" + cname(t.name)
            arrays.append(f"const {CTYPES[t.dtype]} {syms[t.name]}[{t.data.size}] __attribute__((aligned(4))) = "
                          f"{{\n{_c_array(t.data)}\n}};\n")
    (folder / "cmsis_weights.c").write_text("#include <stdint.h>\n\n" + "\n".join(arrays))
    layers = [l for l in report["layers"]]
    kernel_by_name = {l["name"]: l["kernel"] for l in layers}
    compute = [n for n in g.nodes if n.op != "reshape"]
    used_kernels = []

    def kernel_of(n):
        k = kernel_by_name[n.name]
        if report["layers"][[l["name"] for l in layers].index(n.name)].get("schedule", "plain") != "plain":
            raise ValueError(f"layer {n.name}: its edgepack kernel is scheduled (lowered constants); "
                             "the CMSIS-NN harness calls only plain edgepack kernels")
        used_kernels.append(k)
        return k

    def ptr(v):
        p = where[v]
        if p is None:
            raise ValueError(f"tensor {v} has no storage")
        return p

    def sym(v):
        return syms[v]

    body, is_cmsis = [], []
    for li, n in enumerate(compute):
        code, ok = _layer_call(li, n, g, ptr, sym, kernel_of)
        body.append(code)
        is_cmsis.append(ok)
    for k in set(used_kernels):
        for ext in (".c", ".h"):
            shutil.copy2(out / "kernels" / (k + ext), folder / "kernels" / (k + ext))
    decls = "".join(f"extern const {CTYPES[g.tensors[t].dtype]} {s}[{g.tensors[t].data.size}];\n"
                    for t, s in syms.items())
    includes = "".join(f'#include "kernels/{k}.h"\n' for k in sorted(set(used_kernels)))
    arena = max(int(report["arena_bytes"]), 4)
    src = (f"/* CMSIS-NN run of {out.name}: generated by benchmarks/cmsis_nn.py (edgepack's plan, CMSIS-NN's "
           "kernels). */\n#include <stdint.h>\n#include \"model.h\"\n#include \"arm_nnfunctions.h\"\n" + includes
           + decls + f"\n#define EP_CMSIS_SCRATCH {SCRATCH_BYTES}\n"
           f"static int8_t ep_arena[{arena}] __attribute__((aligned(8)));\n"
           "static int8_t ep_cmsis_scratch[EP_CMSIS_SCRATCH] __attribute__((aligned(8)));\n\n"
           "int ep_model_run(const int8_t *input, int8_t *output) {\n    int rc = 0;\n    (void)input;\n"
           "    (void)output;\n    (void)ep_arena;\n" + "".join(body) + "    return rc;\n}\n")
    (folder / "model.c").write_text(src)
    return is_cmsis


def build_firmware(folder: Path, board: dict, lib: Path, nn_dir: Path, core_dir: Path) -> Path:
    gcc = board["toolchain_prefix"] + "gcc"
    srcs = ([str(folder / "model.c"), str(folder / "cmsis_weights.c")]
            + [str(p) for p in sorted((folder / "kernels").glob("*.c"))]
            + [str(folder / "firmware" / f) for f in ("startup.c", "semihost.c", "main.c")])
    elf = folder / "firmware.elf"
    cmd = [gcc, "-std=gnu99", *board["cflags"], "-ffunction-sections", "-fdata-sections", "-DEP_PROFILE",
           "-I", str(folder), "-I", str(folder / "firmware"), "-I", str(nn_dir / "Include"), "-I", str(core_dir),
           *srcs, str(lib), "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections",
           f"-T{folder / 'firmware' / 'link.ld'}", f"-Wl,-Map={folder / 'firmware.map'}", "-o", str(elf)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"CMSIS-NN firmware for {folder} does not build: {r.stderr.strip()[:2000]}")
    return elf


def code_bytes(elf: Path, board: dict, names) -> int:
    """Bytes of the text symbols of ``elf`` whose names are in ``names`` (a set) or match it (a callable)."""
    r = subprocess.run([board["toolchain_prefix"] + "nm", "-S", "--size-sort", str(elf)], capture_output=True,
                       text=True, check=True)
    total = 0
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tT" and (names(parts[3]) if callable(names) else parts[3] in names):
            total += int(parts[1], 16)
    return total


def lib_symbols(lib: Path, board: dict) -> set:
    r = subprocess.run([board["toolchain_prefix"] + "nm", "--defined-only", str(lib)], capture_output=True,
                       text=True, check=True)
    return {p.split()[-1] for p in r.stdout.splitlines() if len(p.split()) == 3 and p.split()[1] in "tT"}


def run(out: Path, xq: np.ndarray, nn_dir: Path, core_dir: Path, work: Path) -> dict:
    """Run OUT's model through CMSIS-NN on OUT's board emulator. Returns raw outputs, per-layer instructions
    (mean over the inputs), whether each layer ran CMSIS-NN, and the bytes of CMSIS-NN code linked."""
    out = Path(out)
    board = json.loads((out / "board.json").read_text())
    lib = library(Path(nn_dir), Path(core_dir), board, Path(work))
    folder = Path(work) / f"cmsis-{out.name}"
    is_cmsis = write_harness(out, folder, Path(nn_dir), Path(core_dir))
    elf = build_firmware(folder, board, lib, Path(nn_dir), Path(core_dir))
    stats = {}
    raw = emulator.run_raw(Model(folder), xq, counts_out=stats)
    return {"raw": raw, "instructions": stats["instructions"], "layer_instructions": stats["layer_instructions"],
            "is_cmsis": is_cmsis, "code_bytes": code_bytes(elf, board, lib_symbols(lib, board)), "elf": elf}
