"""Build one zoo model from one frontend and measure it: the code tests/test_zoo.py asserts on and
benchmarks/zoo.py tabulates.

The data: a calibration batch of ``N_CALIB`` and ``N_INPUTS`` held-out inputs, both seeded standard normal in
the model's input shape (``batches``). :func:`check` exports the model (``FORMATS``: .pt2 from torch.export,
.onnx from the dynamo exporter), builds it for the host, runs the held-out inputs on the host and the numpy
reference, and returns what the harnesses need: the report, the raw outputs' disagreement, and

    relative RMS = sqrt(mean((y_built - y_float)^2) / mean(y_float^2))

of the dequantized host output against the float PyTorch model on the same inputs, and the same error against
the part of the float output that depends on the input (its variation over the batch),

    error / input-dependent RMS = sqrt(mean((y_built - y_float)^2) / mean((y_float - mean_batch(y_float))^2)),

which a built model that ignored its input (a constant output near the float model's mean) would fail, however
small its relative RMS: with seeded random weights and noise inputs, much of a classifier's output is the same
for every input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import MODELS

FORMATS = ("pt2", "onnx_dynamo")
N_CALIB = N_INPUTS = 32


def relative_rms(y, y_float, centered: bool = False) -> float:
    """The relative RMS (module docstring); ``centered``: against the input-dependent part (batch axis 0)."""
    y, y_float = np.asarray(y, np.float64), np.asarray(y_float, np.float64)
    ref = y_float - y_float.mean(0) if centered else y_float
    return float(np.sqrt(np.mean((y - y_float) ** 2) / np.mean(ref ** 2)))


def batches(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(calibration batch, held-out inputs), seeded standard normal, float32, batch first."""
    rng = np.random.default_rng(seed)
    calib = rng.standard_normal((N_CALIB,) + tuple(shape[1:])).astype(np.float32)
    return calib, rng.standard_normal((N_INPUTS,) + tuple(shape[1:])).astype(np.float32)


def float_outputs(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def check(name: str, fmt: str, folder: Path) -> dict:
    """Export zoo model ``name`` (``make(seed=0)``) in ``fmt`` into ``folder``, build it for the host into
    ``folder/out`` calibrated on :func:`batches`' calibration batch, and run the held-out inputs on the host and
    the reference. Returns {report, out, model_path, calib_path, differ (raw outputs where host != reference),
    outputs, rel_rms, rel_rms_centered}."""
    from edgepack.build import build
    from edgepack.runners import run
    from frontend_models import export

    torch.set_num_threads(1)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, shape = MODELS[name].make(seed=0)
    calib, x = batches(shape)
    np.save(folder / "calib.npy", calib)
    path, _ = export(model, shape, fmt, folder)
    out = folder / "out"
    report = build(path, "host", out, calib=folder / "calib.npy")
    y, raw = run(out, x, on="host")
    _, raw_ref = run(out, x, on="reference")
    y_float = float_outputs(model, x)
    if y.shape != y_float.shape:
        raise AssertionError(f"{name} {fmt}: output shape {y.shape}, float model {y_float.shape}")
    return {"report": report, "out": out, "model_path": path, "calib_path": folder / "calib.npy",
            "differ": int((raw != raw_ref).sum()), "outputs": int(raw.size), "rel_rms": relative_rms(y, y_float),
            "rel_rms_centered": relative_rms(y, y_float, centered=True)}
