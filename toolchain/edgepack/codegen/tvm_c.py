"""TIR PrimFunc -> plain C99, through TVM's C code generator and an edgepack TIR pipeline.

The pipeline ``edgepack`` is TVM's default lowering minus MakePackedAPI and the passes that only serve it,
so a PrimFunc whose parameters are ``T.handle("int8")`` pointers comes out as
``void ep_k(int8_t* x, ...)``. What TVM adds around the kernel (``#include "tvm/..."``, ``TVM_DLL``, the
library context and the ``__tvm_ffi_main`` entry) is cut here; read-only parameters get ``const``.

Kernels are cached on disk by a hash of their TIR and the TVM version, so rebuilding a model whose layers
did not change costs no TVM compilation; :func:`kernel_c` also keys them by their specification (op, attributes,
shapes, target) and the source of the kernel templates, so a warm build does not even construct the TIR.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

from .. import __version__

_REGISTERED = False
CLEAN_VERSION = 4  # bump when clean_c changes, so cached kernels are regenerated


def _register():
    global _REGISTERED
    if _REGISTERED:
        return
    import tvm
    from tvm import s_tir, tirx

    def factory(scheduled: bool):
        def _factory():
            @tvm.transform.module_pass(opt_level=0)
            def _pipeline(mod, _ctx):
                # block-form (s_tir) kernels first lose their blocks: init blocks become statements, the
                # buffers shrink to the region each loop iteration uses, tensorized match_buffers are lowered
                blocks = [
                    s_tir.transform.CanonicalizeLoop(),
                    s_tir.transform.LowerInitBlock(),
                    s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                    s_tir.transform.ConvertBlocksToOpaque(),
                    s_tir.transform.CompactBufferAllocation(),
                    s_tir.transform.LowerMatchBuffer(),
                    s_tir.transform.StmtSimplify(),
                    s_tir.transform.LowerOpaqueBlock(),
                ] if scheduled else []
                passes = blocks + [
                    tirx.transform.FlattenBuffer(),
                    tirx.transform.NarrowDataType(32),
                    tirx.transform.UnrollLoop(),
                    tirx.transform.StmtSimplify(),
                    tirx.transform.RemoveNoOp(),
                    tirx.transform.CommonSubexprElim(),
                    tirx.transform.AnnotateEntryFunc(),
                ]
                return tvm.ir.transform.Sequential(passes)(mod)

            def finalize():
                return tvm.ir.transform.Sequential([tirx.transform.LowerIntrin()])

            return _pipeline, finalize, finalize
        return _factory

    tirx.register_tir_pipeline("edgepack", factory(False))
    tirx.register_tir_pipeline("edgepack_scheduled", factory(True))
    _REGISTERED = True


def cache_dir() -> Path:
    d = Path(os.environ.get("EDGEPACK_CACHE", Path.home() / ".cache" / "edgepack")) / "kernels"
    d.mkdir(parents=True, exist_ok=True)
    return d


def target_for(mcpu: str | None):
    import tvm

    t = {"kind": "c"}
    if mcpu:
        t["mcpu"] = mcpu
    return tvm.target.Target(t)


@functools.lru_cache(maxsize=1)
def _templates_hash() -> str:
    """Hash of every kernel template and of this module (a change to either invalidates spec-keyed entries)."""
    h = hashlib.sha256()
    for p in sorted((Path(__file__).parent / "kernels").glob("*.py")) + [Path(__file__)]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def kernel_c(name: str, spec: str, build, const_params, mcpu: str | None = None, use_cache: bool = True,
             template: str = "", scheduled: bool = False) -> str:
    """The C of kernel ``name`` whose specification is the string ``spec``; ``build()`` makes its PrimFunc, called
    only when neither this cache nor the TIR-keyed one of :func:`lower_to_c` has it."""
    import tvm

    key = hashlib.sha256(f"{tvm.__version__}|{__version__}|{CLEAN_VERSION}|{_templates_hash()}|{mcpu}|{name}|"
                         f"{sorted(map(str, const_params))}|{scheduled}|{spec}".encode()).hexdigest()
    path = cache_dir() / f"{name}-spec-{key[:24]}.c"
    if use_cache and path.exists():
        return path.read_text()
    src = lower_to_c(build(), name, const_params, mcpu=mcpu, template=template, use_cache=use_cache,
                     scheduled=scheduled)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(src)
    os.replace(tmp, path)
    return src


def lower_to_c(prim_func, name: str, const_params, mcpu: str | None = None,
               template: str = "", use_cache: bool = True, scheduled: bool = False) -> str:
    """Lower ``prim_func`` to the C definition of function ``name`` (no includes, no TVM symbols).

    ``const_params``: positions (ints) or C names (str) of the read-only pointer parameters; ``scheduled``: the
    function is block-form TIR (a template a schedule transformed), lowered by the block passes first."""
    import tvm
    from tvm import tirx

    func = prim_func.with_attr("global_symbol", name)
    script = func.script()
    key = hashlib.sha256(f"{tvm.__version__}|{__version__}|{CLEAN_VERSION}|{mcpu}|{sorted(map(str, const_params))}|{scheduled}|{script}"
                         .encode())
    path = cache_dir() / f"{name}-{key.hexdigest()[:20]}.c"
    if use_cache and path.exists():
        return path.read_text()
    _register()
    mod = tvm.IRModule({name: func})
    lib = tirx.build(mod, target=target_for(mcpu), pipeline="edgepack_scheduled" if scheduled else "edgepack")
    src = clean_c(lib.inspect_source(), name, const_params, restrict=scheduled)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(src)
    os.replace(tmp, path)
    return src


def clean_c(src: str, name: str, const_params: set, restrict: bool = False) -> str:
    """Cut TVM's headers, export macros, context variable and entry shim; add const to read-only params, and
    ``restrict`` to every pointer param if asked (the buffers of a kernel never overlap: tirx.noalias, and the
    arena plan keeps a layer's inputs, output and scratch apart), so that a store through the int8 output
    does not force the compiler to reload the per-channel constants it may alias as a char pointer."""
    m = re.search(r"TVM_DLL void " + re.escape(name) + r"\(([^)]*)\) \{\n", src)
    if m is None:
        raise RuntimeError(f"TVM output for {name} has no definition of it")
    start = m.end()
    depth, i = 1, start
    while depth:
        if src[i] == "{":
            depth += 1
        elif src[i] == "}":
            depth -= 1
        i += 1
    body = src[start:i - 1]
    params, unused = [], []
    for i, p in enumerate(m.group(1).split(",")):
        p = p.strip()
        pname = p.split()[-1].lstrip("*")
        if restrict and "*" in p:
            p = p.replace("*", "* restrict", 1)
        params.append(("const " + p) if (pname in const_params or i in const_params) else p)
        if not re.search(r"\b" + re.escape(pname) + r"\b", body):
            unused.append(pname)  # TVM removed every access (e.g. a window that never touches the input)
    voids = "".join(f"  (void){u};\n" for u in unused)
    return f"void {name}({', '.join(params)}) {{\n{voids}{drop_dead_locals(body)}}}\n"


_LOCAL = re.compile(r"^\s*(?:u?int\d+_t|bool) (\w+) = ([\w\s()+\-*/%<>&|^~]+);\n", re.M)


def drop_dead_locals(body: str) -> str:
    """Remove local definitions nothing reads whose value is arithmetic on names (no call, no memory access):
    TVM's common-subexpression pass leaves a kernel's named lets behind as unused aliases of its cse_v names
    (``int32_t r = cse_v3;``), which -Wall -Werror rejects."""
    while True:
        dead = [m for m in _LOCAL.finditer(body)
                if len(re.findall(r"\b" + re.escape(m.group(1)) + r"\b", body)) == 1]
        if not dead:
            return body
        for m in reversed(dead):
            body = body[:m.start()] + body[m.end():]


def prototype(c_def: str) -> str:
    return c_def.split("{", 1)[0].strip() + ";"
