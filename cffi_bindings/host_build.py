"""Compile an edgepack output folder's C (model.c, weights.c, kernels/, runtime/) into a host extension.

cffi API mode: the extension is compiled by the system C compiler from the very sources that go into the
firmware, and exposes ``ep_model_run``. The module is named after a hash of the sources, so several models
can be loaded in one process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

CDEF = """
int ep_model_run(const int8_t *input, int8_t *output);
"""


def sources(out: Path) -> list[Path]:
    out = Path(out)
    return [out / "model.c", out / "weights.c"] + sorted((out / "kernels").glob("*.c")) + \
        sorted((out / "runtime").glob("*.c"))


def module_name(out: Path) -> str:
    h = hashlib.sha256()
    for p in sources(out) + [Path(out) / "model.h"]:
        h.update(p.read_bytes())
    return f"_ep_model_{h.hexdigest()[:16]}"


def build(out: Path, quiet: bool = True) -> Path:
    """Build OUT/host/<module>.so and return its path."""
    import cffi

    out = Path(out).resolve()
    name = module_name(out)
    host = out / "host"
    host.mkdir(exist_ok=True)
    for old in host.glob("_ep_model_*"):
        if not old.name.startswith(name):
            old.unlink()
    existing = sorted(host.glob(name + "*.so"))
    if existing:
        return existing[0]
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(name, '#include "model.h"\n', sources=[str(p) for p in sources(out)],
                   include_dirs=[str(out)], extra_compile_args=["-O2", "-std=c99"])
    with tempfile.TemporaryDirectory(prefix="ep-cffi-") as tmp:
        if quiet:
            stdout = os.dup(1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
        try:
            so = ffi.compile(tmpdir=tmp, verbose=False)
        finally:
            if quiet:
                os.dup2(stdout, 1)
                os.close(devnull)
                os.close(stdout)
        dst = host / Path(so).name
        shutil.copy2(so, dst)
    return dst


def load(out: Path):
    """Import the host module of OUT (building it if needed); returns (ffi, lib)."""
    so = build(out)
    name = so.name.split(".")[0]
    if name in sys.modules:
        mod = sys.modules[name]
    else:
        spec = importlib.util.spec_from_file_location(name, so)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
    return mod.ffi, mod.lib
