"""Build-time integer identities of the lowering, each with the int32 bound that makes it exact.

The integer graph (reference/ops.py) is the specification and is never changed; a scheduled kernel may read
*lowered* constants instead of the graph's, computed here from them, and may use cheaper arithmetic whose
equality with the specification is proven here from the layer's constants:

* accumulator bound: for output channel o, every accumulator the layer can produce satisfies
  ``|acc_o| <= A_o = |bias_o| + 255 * sum_k |w_ok|`` (inputs minus the zero point lie in [-255, 255]). Kernels
  accumulate in int32 (wrapping, as SMLAD does), which is exact when ``A_o <= 2^31 - 1``;
* zero-point folding: ``sum((x - zp) * w) = sum(x * w) - zp * sum(w)``, so ``bias'_o = bias_o - zp * sum_k w_ok``
  and the kernel adds ``x * w`` for in-bounds taps (|bias'_o| <= A_o, so it is an int32);
* 32-bit requantization (:func:`requantize32`), equal to reference/arith.py ``requantize`` for every
  ``|acc| <= A_o`` when ``A_o * 2^left_o < 2^29`` (proof in the docstring);
* zero weight rows padded to a multiple of 4 (the SMLAD micro-kernels read 4 weights per word): adds 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..reference.arith import INT32_MAX

FAST_REQUANT_LIMIT = 1 << 29  # |acc << left| below this: requantize32 is exact (see requantize32)


def acc_bound(bias, w2d, span: int = 255) -> np.ndarray:
    """A_o = |bias_o| + span * sum_k |w_ok| (Python ints in an object array: no overflow)."""
    w = np.abs(np.asarray(w2d, np.int64)).sum(axis=1)
    return np.array([abs(int(b)) + span * int(s) for b, s in zip(np.asarray(bias).reshape(-1), w)], dtype=object)


def fold_zero_point(bias, w2d, zp: int) -> np.ndarray:
    """bias'_o = bias_o - zp * sum_k w_ok, as int32 (callers check acc_bound first, which bounds it)."""
    b = np.asarray(bias, np.int64) - int(zp) * np.asarray(w2d, np.int64).sum(axis=1)
    if np.abs(b).max(initial=0) > INT32_MAX:
        raise OverflowError("folded bias leaves int32")
    return b.astype(np.int32)


def requantize32(acc, mult, shift):
    """The 32-bit requantization the scheduled kernels compute (numpy model of the C, int64 arrays).

            x = acc * 2^left,  left = max(shift, 0),  e = max(-shift, 0)
        q = (x * M + 2^30) >> 31 = (2x * M + 2^31) >> 32  (one SMMULR of 2x: exact, 2x is an int32)
        r = (2q + 2^e - [q < 0]) >> (e + 1)               (32-bit: add, add, arithmetic shift)

    The kernels form 2x as 2 acc + 2 bias (one ADD with a shifted operand, the lowering doubling the bias: see
    :func:`double_bias`) and q with SMMULR (firmware/runtime/ep_dsp.h ep_smmulr: (a b + 2^31) >> 32).

    Proof that r = RDBPOT(SRDHM(sat32(x), M), e) of reference/arith.py when |x| < 2^29 and e <= 30:
    no saturation (|x| < 2^31); SRDHM's nudge is 2^30 for ab >= 0 and 1 - 2^30 for ab < 0 with truncating
    division by 2^31, and for ab < 0, trunc((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31) (the numerator is
    negative, and ceil(v / 2^31) = floor((v + 2^31 - 1) / 2^31)), so SRDHM = floor((ab + 2^30) / 2^31) = q in both
    cases, and floor((ab + 2^30) / 2^31) = floor((2ab + 2^31) / 2^32); |q| <= |x| < 2^29 since M < 2^31. RDBPOT(q, e) is floor((q + 2^(e-1) - [q < 0]) / 2^e) for e >= 1
    (round half away from zero) and q for e = 0. Doubling numerator and denominator gives
    floor((2q + 2^e - 2[q < 0]) / 2^(e+1)); for q < 0 the numerator 2q + 2^e - 2 is even and 2q + 2^e - 1 is odd,
    so adding 1 cannot reach the next multiple of 2^(e+1) and the floor is unchanged: r. For e = 0,
    floor((2q + 1 - [q < 0]) / 2) = q. All intermediates lie within int32: |2q + 2^e| < 2^30 + 2^30.
    """
    acc = np.asarray(acc, np.int64)
    shift = np.asarray(shift, np.int64)
    left, e = np.maximum(shift, 0), np.maximum(-shift, 0)
    x = acc << left
    q = (x * np.asarray(mult, np.int64) + (1 << 30)) >> 31
    return (2 * q + (np.int64(1) << e) + (q >> 63)) >> (e + 1)


@dataclass
class RequantPlan:
    """How a layer requantizes: ``fast`` (requantize32, proven) or the int64 transcription of arith.py.
    ``mult`` / ``shift`` are the arrays the kernel reads (channels whose output is 0 for every possible
    accumulator get multiplier 0); ``left`` whether any channel shifts left; ``why``: the reason it is not fast."""

    fast: bool
    mult: np.ndarray
    shift: np.ndarray
    left: bool
    changed: bool = False
    why: str = ""
    bound: list = field(default_factory=list)


def plan_requant(bound, mult, shift) -> RequantPlan:
    """Prove requantize32 exact for every channel (A_o * 2^left_o < 2^29 and e_o <= 30), or say why not.

    A channel with e_o >= 30 whose q can never reach 2^(e_o - 1) (|q| <= |x| < 2^29) always yields 0, which is
    requantize32 with multiplier 0; such channels are rewritten so (an exact identity over the bound)."""
    mult = np.asarray(mult, np.int64).copy()
    shift = np.asarray(shift, np.int64).copy()
    changed = False
    for o, a in enumerate(bound):
        left = max(int(shift[o]), 0)
        if (int(a) << left) >= FAST_REQUANT_LIMIT:
            return RequantPlan(False, mult.astype(np.int32), shift.astype(np.int32), bool((shift > 0).any()),
                               why=f"channel {o}: accumulator bound {int(a)} x 2^{left} >= 2^29")
        if -int(shift[o]) >= 30:  # |q| <= |x| < 2^29 <= 2^(e-1): rounds to 0 for every accumulator
            mult[o], shift[o], changed = 0, 0, True
    return RequantPlan(True, mult.astype(np.int32), shift.astype(np.int32), bool((shift > 0).any()), changed,
                       bound=[int(a) for a in bound])


def double_bias(bias) -> np.ndarray:
    """2 bias, the addend of 2 acc in the kernels' 2x (exact where the requantization plan is fast:
    |bias| <= A < 2^29)."""
    return (np.asarray(bias, np.int64) * 2).astype(np.int32)


def prove(bias, w2d, mult, shift):
    """The bounds a scheduled int8 kernel needs: (the requantization plan, None) when the int32 accumulator
    and requantize32 are exact for the layer, else (None, the reason)."""
    bound = acc_bound(bias, w2d)
    if max(bound) > INT32_MAX:
        return None, f"accumulator bound {max(bound)} exceeds int32"
    rq = plan_requant(bound, mult, shift)
    if not rq.fast:
        return None, f"32-bit requantization not proven: {rq.why}"
    return rq, None


def pad_rows(w2d, multiple: int = 4) -> np.ndarray:
    """Weight rows (O, K) zero-padded to (O, K4), K4 the next multiple of ``multiple``."""
    w2d = np.asarray(w2d, np.int8)
    k = w2d.shape[1]
    k4 = -(-k // multiple) * multiple
    if k4 == k:
        return np.ascontiguousarray(w2d)
    out = np.zeros((w2d.shape[0], k4), np.int8)
    out[:, :k] = w2d
    return out
