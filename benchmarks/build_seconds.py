"""Build time of edgepack for the MNIST residual CNN and a ~250k-parameter model, cold and warm kernel cache.

    python benchmarks/build_seconds.py

Prints, per model: parameters, layers, kernels, and the seconds of each build stage (import, quantize,
codegen incl. TVM, -Werror compile, host cffi build, total) for a cold kernel cache and a warm one.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "toolchain"), str(ROOT / "examples")]

from edgepack.build import build  # noqa: E402
from mnist_common import MobileStyleNet, ResidualCNN  # noqa: E402


def main():
    work = Path(tempfile.mkdtemp(prefix="ep-bench-"))
    os.environ["EDGEPACK_CACHE"] = str(work / "cache")
    np.save(work / "calib.npy", np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32))
    x = torch.randn(1, 1, 28, 28)
    print(f"{'model':16s} {'params':>8s} {'layers':>6s} {'cache':>5s} {'import':>7s} {'quant':>6s} "
          f"{'codegen':>7s} {'compile':>7s} {'host':>6s} {'total':>6s}")
    for name, cls in (("mnist-resnet", ResidualCNN), ("mobile-250k", MobileStyleNet)):
        torch.manual_seed(0)
        m = cls().eval()
        path = work / f"{name}.pt2"
        torch.export.save(torch.export.export(m, (x,)), path)
        params = sum(p.numel() for p in m.parameters())
        for cache in ("cold", "warm"):
            if cache == "cold":
                shutil.rmtree(work / "cache", ignore_errors=True)
            r = build(path, "host", work / f"out-{name}", calib=work / "calib.npy")
            s = r["build_seconds"]
            print(f"{name:16s} {params:8d} {len(r['layers']):6d} {cache:>5s} {s['import']:7.2f} {s['quantize']:6.2f} "
                  f"{s['codegen']:7.2f} {s['compile']:7.2f} {s['host_build']:6.2f} {s['total']:6.2f}", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
