"""Run a built model on a target behind one interface: ``run(out, x, on)``.

Targets: ``reference`` (the numpy integer executor, the specification), ``host`` (the generated C compiled
for this machine through cffi) and ``emulator`` (the board's firmware under QEMU). Inputs are float batches in the model's own layout (NCHW); they are quantized
with the model's input parameters, and the raw int8 outputs are returned in the model's layout too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import EdgepackError, check_batch
from ..graph import Graph, graph_to_model, io_spec, model_batch_axis, model_to_graph
from . import emulator, host, reference

TARGETS = {"reference": reference.run_raw, "host": host.run_raw, "emulator": emulator.run_raw}


class Model:
    """A built output folder: its integer graph and the layout conversions at its boundary."""

    def __init__(self, out):
        self.out = Path(out)
        if not (self.out / "graph.json").exists():
            raise EdgepackError(f"{self.out}: not an edgepack output folder (no graph.json); run edgepack build")
        self._use(Graph.load(self.out))

    def _use(self, graph):
        self.graph = graph
        self.inp = self.graph.tensors[self.graph.inputs[0]]
        self.outp = self.graph.tensors[self.graph.outputs[0]]

    @classmethod
    def from_graph(cls, q: Graph) -> "Model":
        """An integer graph in memory (not built): for the reference target only."""
        m = cls.__new__(cls)
        m.out = None
        m._use(q)
        return m

    @staticmethod
    def _float_shape(s):
        """The float graph's shape (NCHW) of an integer-dialect (NHWC) tensor shape."""
        return (s[0], s[3], s[1], s[2]) if len(s) == 4 else tuple(s)

    @property
    def input_shape(self):
        """The model's own input shape (NCHW for images, (N, C, L), NHWC for a model that permutes its input
        first: ``meta["io"]``), batch 1."""
        return io_spec(self.graph.meta, "input", self._float_shape(self.inp.shape))[0]

    def quantize_input(self, x: np.ndarray, source: str = "input") -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        want = tuple(self.input_shape)
        fshape = self._float_shape(self.inp.shape)
        b = model_batch_axis(self.graph.meta, "input", fshape)
        if x.shape == want[:b] + want[b + 1:]:
            x = np.expand_dims(x, b)
        if x.ndim != len(want) or x.shape[:b] + x.shape[b + 1:] != want[:b] + want[b + 1:]:
            shown = ", ".join("N" if i == b else str(d) for i, d in enumerate(want))
            raise EdgepackError(f"{source}: input shape {tuple(x.shape)} does not match the model input ({shown})")
        x = model_to_graph(self.graph.meta, "input", fshape, x)
        if x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        q = self.inp.quant
        return np.clip(np.round(x / q.scale) + q.zero_point, -128, 127).astype(np.int8)

    def raw_to_model_layout(self, raw: np.ndarray) -> np.ndarray:
        y = raw.transpose(0, 3, 1, 2) if raw.ndim == 4 else raw
        return graph_to_model(self.graph.meta, "output", self._float_shape(self.outp.shape), y)

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        q = self.outp.quant
        if q is None:  # packed bits (single binary layers under test): no real-valued meaning
            return raw
        return ((raw.astype(np.float32) - q.zero_point) * np.float32(q.scale)).astype(np.float32)


def check_unedited(out, on: str, allow_edited: bool = False):
    """Refuse to run an OUT whose generated files changed since the build (the targets would silently
    disagree: reference reads graph.npz, host compiles the C, the emulator runs firmware.elf). With
    ``allow_edited`` the edited C runs on host and emulator (firmware.elf is remade from it first), and the
    reference, which no longer specifies it, is refused."""
    from .. import outdir, proc

    changed = outdir.edited_files(out)
    if not changed:
        return
    rel, what = changed[0]
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    if rel == outdir.MANIFEST:
        raise EdgepackError(f"{out}: no {outdir.MANIFEST}, so edgepack cannot tell whether its files are the ones "
                            "it built; rebuild with edgepack build")
    if not allow_edited:
        raise EdgepackError(f"{Path(out) / rel} was {what} after the build{more}: reference, host and emulator "
                            "would disagree; rebuild with edgepack build, or pass --allow-edited to run the "
                            "edited C on host / emulator")
    if on == "reference":
        raise EdgepackError(f"{Path(out) / rel} was {what} after the build{more}: the reference (graph.npz) does not "
                            "specify edited C; run it --on host or --on emulator, or rebuild with edgepack build")
    print(f"warning: {Path(out) / rel} was {what} after the build{more}; running the edited files on {on}, "
          "which the reference no longer specifies", file=sys.stderr)
    if on == "emulator" and (Path(out) / "Makefile").exists():
        r = proc.run(["make", "-s", "firmware.elf"], cwd=out)
        if r.returncode:
            said = " ".join((r.stderr + r.stdout).split())[:200]
            raise EdgepackError(f"{out}: make firmware.elf failed on the edited sources: {said}")


def run(out, x: np.ndarray, on: str = "host", source: str = "input", stats: dict | None = None,
        check: bool = True, allow_edited: bool = False):
    """Run the batch ``x`` on target ``on``; return (float outputs, raw int8 outputs), model layout.

    ``check``: refuse an OUT whose files were edited after the build (:func:`check_unedited`); the build's own
    measurements pass False. With ``stats`` (a dict) and ``on="emulator"`` on a Cortex-M board, it receives
    per-input instruction counts: ``instructions`` (N,) and ``layer_instructions`` (N, layers)."""
    if on not in TARGETS:
        raise EdgepackError(f"--on {on}: unknown target; choose one of {', '.join(TARGETS)}")
    m = Model(out)
    if check:
        check_unedited(m.out, on, allow_edited)
    x = check_batch(np.asarray(x), source, "the input batch",
                    batch_axis=model_batch_axis(m.graph.meta, "input", m._float_shape(m.inp.shape)))
    xq = m.quantize_input(x, source)
    raw_fn = TARGETS[on]
    raw = raw_fn(m, xq, counts_out=stats) if on == "emulator" else raw_fn(m, xq)
    raw = m.raw_to_model_layout(raw)
    return m.dequantize_output(raw), raw
