"""Cortex-M DSP micro-kernels as TVM tensor intrinsics (``tvm.s_tir.TensorIntrin``), for the SMLAD schedules.

``smlad_intrin(npb, nob)`` is the update of an npb x nob block of int32 accumulators (npb pixels, nob output
channels) by one group of 4 reduction elements:

    desc:  Acc[i, o] += Col[0, i, 2r + l] * W[0, 0, o, 2l + r]     for i < npb, o < nob, r, l in {0, 1}

Col holds int16 column values in SXTB16 lane order (word r of a group packs the elements 2l + r, l = 0, 1, of
the natural order: what SXTAB16 / SXTAB16 ROR #8 of the 4 input bytes give); W holds the natural-order int8
weights of the block's channels, adjacent (the lowering stores them blocked). The implementation loads each
pixel's group as one 64-bit word (LDRD), two channels' 4 weights each as one 64-bit word (one 32-bit word for a
single channel), sign-extends the weights with SXTB16 and SXTB16 ROR #8 (bytes 0, 2 and 1, 3) and
accumulates with two SMLADs per (pixel, channel):

    impl:  Acc[i, o] = smlad(lo32(Col_i), sxtb16(W_o), smlad(hi32(Col_i), sxtb16_ror8(W_o), Acc[i, o]))

smlad(a, b, acc) = acc + a.lo * b.lo + a.hi * b.hi, so the first SMLAD adds Col[i,0] * W[o,0] + Col[i,1] * W[o,2]
and the second Col[i,2] * W[o,1] + Col[i,3] * W[o,3]: the description, term by term (in wrapping int32
arithmetic, which the lowering proves exact: codegen/lower.py). The calls resolve to firmware/runtime/ep_dsp.h.
"""

from __future__ import annotations

from functools import lru_cache

from tvm import s_tir
from tvm.script import tirx as T
from tvm.script.parser.core.entry import parse


def _head(name: str, npb: int, nob: int) -> list:
    """The signature, buffers and root block of the description or implementation (the same for both)."""
    return [
        "@T.prim_func(s_tir=True)",
        f"def {name}(c: T.handle, w: T.handle, a: T.handle):",
        f'    Col = T.match_buffer(c, (1, {npb}, 4), "int16", offset_factor=1)',
        f'    Wt = T.match_buffer(w, (1, 1, {nob}, 4), "int8", offset_factor=1)',
        f'    Acc = T.match_buffer(a, ({npb}, {nob}), "int32", offset_factor=1)',
        '    with T.sblock("root"):',
        f"        T.reads(Acc[0:{npb}, 0:{nob}], Col[0, 0:{npb}, 0:4], Wt[0, 0, 0:{nob}, 0:4])",
        f"        T.writes(Acc[0:{npb}, 0:{nob}])",
    ]


def _desc_source(npb: int, nob: int) -> str:
    """TVMScript of the description; axes of extent 1 are loops without block iterators (as the scheduled
    block has them)."""
    axes = [(n, v, e) for n, v, e in (("i", "vi", npb), ("o", "vo", nob)) if e > 1] + [("r", "vr", 2), ("l", "vl", 2)]
    kinds = "S" * (len(axes) - 2) + "RR"
    vi = "vi" if npb > 1 else "0"
    vo = "vo" if nob > 1 else "0"
    return "\n".join([
        *_head("desc", npb, nob),
        f"        for i, o, r, l in T.grid({npb}, {nob}, 2, 2):",
        '            with T.sblock("update"):',
        f'                {", ".join(v for _, v, _ in axes)} = T.axis.remap("{kinds}", [{", ".join(n for n, _, _ in axes)}])',
        f"                Acc[{vi}, {vo}] = Acc[{vi}, {vo}] + T.Cast(\"int32\", Col[0, {vi}, vr * 2 + vl]) "
        f"* T.Cast(\"int32\", Wt[0, 0, {vo}, vl * 2 + vr])",
    ]) + "\n"


def _impl_source(npb: int, nob: int) -> str:
    """TVMScript of the implementation, straight-line, every column and weight word loaded once, in the order
    that keeps the fewest values live (13 registers for 2 x 2: 4 accumulators, 4 weight lanes, one pixel's
    group, 3 pointers): with several pixels the weights are extended first and each pixel's group follows;
    with one pixel its group comes first and the channels follow one by one."""
    ext = 'T.call_extern("{t}", "{f}", {a})'
    lines = _head("impl", npb, nob)

    pairs = npb > 1  # one pixel: a word per channel keeps fewer values live than a pair per LDRD

    def weights(o):
        out = []
        if pairs and o % 2 == 0 and o + 1 < nob:  # the block's channels are adjacent: two words per LDRD
            out.append(f"        wp{o}: T.let[T.int64] = " + ext.format(t="int64", f="ep_ld64a", a=f"T.address_of(Wt[0, 0, {o}, 0])"))
            out.append(f'        w{o}: T.let[T.int32] = T.Cast("int32", wp{o})')
        elif pairs and o % 2 == 1:
            out.append(f'        w{o}: T.let[T.int32] = T.Cast("int32", T.shift_right(wp{o - 1}, T.int64(32)))')
        else:
            out.append(f"        w{o}: T.let[T.int32] = " + ext.format(t="int32", f="ep_ld32a", a=f"T.address_of(Wt[0, 0, {o}, 0])"))
        out.append(f"        w{o}a: T.let[T.int32] = " + ext.format(t="int32", f="ep_sxtb16", a=f"w{o}"))
        out.append(f"        w{o}b: T.let[T.int32] = " + ext.format(t="int32", f="ep_sxtb16_ror8", a=f"w{o}"))
        return out

    def column(i):
        return [f"        c{i}: T.let[T.int64] = " + ext.format(t="int64", f="ep_ld64a", a=f"T.address_of(Col[0, {i}, 0])")]

    def mac(i, o):
        lo, hi = f'T.Cast("int32", c{i})', f'T.Cast("int32", T.shift_right(c{i}, T.int64(32)))'
        inner = ext.format(t="int32", f="ep_smlad", a=f"{hi}, w{o}b, Acc[{i}, {o}]")
        return [f"        Acc[{i}, {o}] = " + ext.format(t="int32", f="ep_smlad", a=f"{lo}, w{o}a, {inner}")]

    if npb > 1:
        for o in range(nob):
            lines += weights(o)
        for i in range(npb):
            lines += column(i)
            for o in range(nob):
                lines += mac(i, o)
    else:
        lines += column(0)
        for o in range(nob):
            lines += weights(o) + mac(0, o)
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=None)
def smlad_intrin(npb: int, nob: int) -> str:
    """Register (once) and return the name of the npb x nob SMLAD micro-kernel."""
    name = f"ep_smlad_{npb}x{nob}x4"
    impl = parse(_impl_source(npb, nob), {"T": T})
    desc = parse(_desc_source(npb, nob), {"T": T})
    s_tir.TensorIntrin.register(name, desc, impl, override=True)
    return name
