"""Target ``host``: the generated C, compiled for this machine through cffi, one inference per call."""

import sys
from pathlib import Path

import numpy as np

from ..errors import EdgepackError


def _cffi():
    root = Path(__file__).resolve().parents[3]
    if str(root) not in sys.path and (root / "cffi_bindings").is_dir():
        sys.path.insert(0, str(root))
    from cffi_bindings import host_build
    return host_build


def run_raw(model, xq: np.ndarray) -> np.ndarray:
    try:
        ffi, lib = _cffi().load(model.out)
    except Exception as e:  # compiler missing or failing
        raise EdgepackError(f"{model.out}: host build failed ({str(e).splitlines()[-1] if str(e) else e}); "
                            "install a C compiler (Debian package build-essential)") from e
    n = xq.shape[0]
    out_shape = tuple(model.outp.shape[1:])
    dtype = np.dtype(model.outp.dtype)  # int8 for models; packed uint32 for single binary layers under test
    res = np.empty((n,) + out_shape, dtype=dtype)
    for i in range(n):
        xi = np.ascontiguousarray(xq[i])
        yi = np.empty(out_shape, dtype=dtype)
        rc = lib.ep_model_run(ffi.cast("const int8_t *", ffi.from_buffer(xi)),
                              ffi.cast("int8_t *", ffi.from_buffer(yi)))
        if rc != 0:
            raise EdgepackError(f"{model.out}: ep_model_run returned {rc} on image {i}")
        res[i] = yi
    return res
