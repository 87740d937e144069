"""The schedule table: which kernel a layer gets, by (op, board feature).

A board lists the features of its core (``features = ["dsp"]`` in boards/*.toml: the Armv7E-M / Armv8-M DSP
extension, or the same SIMD32 instructions of Armv7-A). For each layer the first feature of the board that has
an entry for the op picks a *scheduled kernel*: a module with PARAMS / CONST, ``lower(attrs, shapes, consts)``
(the build-time identities of codegen/lower.py, with their bounds: it returns ``(None, reason)`` where they do
not hold), ``template(attrs, shapes)`` (block-form TIR: what it computes), ``schedule(sch, attrs, shapes)``
(tvm.s_tir.Schedule primitives onto the micro-kernels of kernels/intrin_dsp.py; a kernel without one is
emitted as written) and ``scratch_bytes``.
Every other layer, and every layer on a board without features, gets the plain kernel: kernels.KERNELS[op]
(PARAMS, CONST, template; its TIR is emitted as written). A kernel a later engineer adds to KERNELS alone
keeps working on every board.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .kernels import KERNELS, avgpool_s8_sxtab16, conv2d_s8_smlad, dense_s8_smlad, dwconv2d_s8_fold

SCHEDULES = {
    ("conv2d_s8", "dsp"): conv2d_s8_smlad,
    ("dense_s8", "dsp"): dense_s8_smlad,
    ("dwconv2d_s8", "dsp"): dwconv2d_s8_fold,
    ("avgpool_s8", "dsp"): avgpool_s8_sxtab16,
}
KNOWN_FEATURES = ("dsp",)


@dataclass
class Choice:
    """The kernel of one layer: module, attributes (lowered), constants replaced by the lowering (param name
    -> array), scratch bytes, the feature it was scheduled for ("plain" if none) and why it fell back."""

    module: object
    attrs: dict
    consts: dict = field(default_factory=dict)
    scratch: int = 0
    feature: str = "plain"
    note: str = ""

    @property
    def name(self) -> str:
        return self.module.__name__.rsplit(".", 1)[-1]

    @property
    def scheduled(self) -> bool:
        return hasattr(self.module, "schedule")


def board_features(board: dict) -> tuple:
    return tuple(f for f in board.get("features", []) if f in KNOWN_FEATURES)


def choose(op: str, features, attrs: dict, shapes: dict, consts: dict) -> Choice:
    """The kernel for a layer with ``op``, ``attrs``, ``shapes`` (by parameter name) and constant inputs
    ``consts`` (by parameter name, numpy arrays) on a core with ``features``."""
    notes = []
    if features and (attrs.get("layout") or attrs.get("groups", 1) != 1):
        why = "strided views of a concat / slice" if attrs.get("layout") else f"{attrs['groups']} groups"
        return Choice(KERNELS[op], dict(attrs), note=f"plain kernel: the scheduled kernels take no {why}")
    for f in features:
        mod = SCHEDULES.get((op, f))
        if mod is None:
            continue
        new_attrs, new = mod.lower(attrs, shapes, consts)
        if new_attrs is None:
            notes.append(f"{f}: {new}")
            continue
        return Choice(mod, new_attrs, new, mod.scratch_bytes(new_attrs, shapes), f)
    return Choice(KERNELS[op], dict(attrs), note="; ".join(notes))
