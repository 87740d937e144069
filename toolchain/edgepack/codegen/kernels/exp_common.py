"""Shared pieces of the exponent-code kernels: the power-of-two ones (conv2d_exp, dwconv2d_exp, dense_exp,
``--weights pow2-N``) and the codebook ones (conv2d_expcb, dwconv2d_expcb, dense_expcb, ``--weights expN``:
:func:`check_codebook`, :func:`signed_table_macro`, :func:`code_at`, :func:`requantize_store32`).

Codes (``pack.expcodes``): b bits, top bit the sign, low b-1 bits the magnitude index m; m = 0 is 0, else the
weight is sign * 2^max(top - (m-1), 0). Every kernel decodes through a 2^b-entry table that it builds on its
stack from constants (bits and top are template attributes), so a weight costs one table load.

Factoring: the magnitudes in use span at most L = 2^(b-1) - 1 exponents, so w = 2^f * w' with
f = max(0, top - (L-1)) and |w'| <= 2^maxe, maxe = min(top, L-1). conv2d_exp accumulates S = sum x * w'
and finishes with acc = bias + 2^f * (S - zp * sum_valid w'): the same integer as the reference's
bias + sum (x - zp) * w, with every partial sum below the packer's int32 bound (|partial| <= 255 * sum |w|).
The packer guarantees that bound (pack.expcodes.accumulator_bound < 2^31); the kernels rely on it.

Stack: the conv and depthwise kernels decode a block of output channels into a scratch array on the stack
(at most SCRATCH_BYTES together with their small tables); when even one channel does not fit they fall back
to decoding every weight where it is used (correct, slower).
"""

from __future__ import annotations

from tvm.script import tirx as T

from ...pack.expcodes import row_bytes  # noqa: F401  (re-exported for the kernels)

SCRATCH_BYTES = 5120  # stack bytes a kernel may use for decoded weights and tap sums (boards: 8 KiB stack)


def code_rows(op: str, shapes, rows: int, k: int, bits: int) -> int:
    """Bytes per packed row of ``k`` codes of ``bits`` bits, after checking that shapes["codes"] is (rows, that)."""
    rb = row_bytes(k, bits)
    if tuple(shapes["codes"]) != (rows, rb):
        raise ValueError(f"{op}: codes shape {tuple(shapes['codes'])} != ({rows}, {rb})")
    return rb


def check_codebook(op: str, attrs, shapes, rows: int) -> tuple:
    """(bits, codebook rows G, entries NC) of an ``*_expcb`` layer: the codebook is (G, 2^(bits-1)) int16 with
    G = 1 (per layer) or ``rows`` (one per output channel)."""
    bits = int(attrs["bits"])
    if not 2 <= bits <= 8:
        raise ValueError(f"{op}: bits must be 2..8, got {bits}")
    g, nc = (int(v) for v in shapes["codebook"])
    if nc != 1 << (bits - 1) or g not in (1, rows):
        raise ValueError(f"{op}: codebook shape ({g}, {nc}) does not fit {bits}-bit codes of {rows} channels")
    return bits, g, nc


def signed_table_macro(bits, nc, off=0):
    """Macro (TS, CBk, row): TS[off + c] = sign(c) * codebook[row, c & (nc - 1)] for the 2^bits codes c (a
    loop)."""
    n = 1 << bits

    @T.macro
    def body(TS, CBk, row):
        for c in range(n):
            TS[off + c] = T.Select(c >= nc, 0 - T.Cast("int32", CBk[row * nc + (c & (nc - 1))]),
                             T.Cast("int32", CBk[row * nc + (c & (nc - 1))]))

    return body


def check_exp_attrs(op: str, attrs) -> tuple:
    bits, top = int(attrs["bits"]), int(attrs["top"])
    if not 2 <= bits <= 6:
        raise ValueError(f"{op}: bits must be 2..6, got {bits}")
    if not 0 <= top <= 30:
        raise ValueError(f"{op}: top must be 0..30, got {top}")
    return bits, top


def levels(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def factor(bits: int, top: int) -> tuple:
    """(f, maxe): w = 2^f * w' with |w'| <= 2^maxe for every code of this layer."""
    f = max(0, top - (levels(bits) - 1))
    return f, top - f


def table_macro(bits, top, f, scale=1):
    """Macro (Tb, o): Tb[o + c] = scale * (weight of code c) / 2^f for the 2^b codes (a loop over constants)."""
    n = 1 << bits
    half = n >> 1
    mmask = half - 1

    @T.macro
    def body(Tb, o):
        for c in range(n):
            # m = max(c & mmask, 1) keeps the shift in range for the zero code, whose value is then 0
            Tb[o + c] = T.Select((c & mmask) == 0, 0, T.Select(c >= half, -scale, scale) * T.shift_left(
                T.int32(1), T.Select(top + 1 - T.Select((c & mmask) > 1, c & mmask, 1) > 0,
                                     top + 1 - T.Select((c & mmask) > 1, c & mmask, 1), 0) - f))

    return body


def code_at(Cb, row, k, bits, rb):
    """TIR expression: code number k (runtime) of the packed row starting at byte ``row`` of Cb."""
    mask = (1 << bits) - 1
    if 8 % bits == 0:  # 2 and 4 bits: never straddle a byte
        per = 8 // bits
        sh = {1: 0, 2: 1, 4: 2, 8: 3}[per]
        byte = T.Cast("int32", Cb[row + T.shift_right(k, sh)])
        return T.shift_right(byte, (k & (per - 1)) * bits) & mask
    bit = k * bits
    q = T.shift_right(bit, 3)
    lo = T.Cast("int32", Cb[row + q])
    hi = T.if_then_else(q + 1 < rb, T.Cast("int32", Cb[row + T.Select(q + 1 < rb, q + 1, q)]), 0)
    return T.shift_right(lo | T.shift_left(hi, 8), bit & 7) & mask


def group(bits: int) -> tuple:
    """(codes, bytes) of the smallest byte-aligned run of codes: every code's place in it is static."""
    g = 8
    while g % 2 == 0 and (g // 2) * bits % 8 == 0:
        g //= 2
    return g, g * bits // 8


def static_code(Cb, base, j, bits):
    """TIR expression: code j of the byte-aligned group starting at byte ``base``; j a constant once the
    group loop is unrolled (every test below then folds away)."""
    mask = (1 << bits) - 1
    bit = j * bits
    q, sh = T.shift_right(bit, 3), bit & 7
    v = T.Cast("int32", Cb[base + q])
    if 8 % bits:  # 3, 5, 6 bits: some codes straddle two bytes
        v = v | T.if_then_else(sh + bits > 8, T.shift_left(T.Cast("int32", Cb[base + q + 1]), 8), 0)
    return T.shift_right(v, sh) & mask


# ---- window geometry -------------------------------------------------------------------------------------

def window_geometry(op, attrs, H, W, KH, KW, OH, OW):
    (SH, SW), (PT, PL, PB, PR), (DH, DW) = attrs["strides"], attrs["pads"], attrs["dilations"]
    oh = (H + PT + PB - DH * (KH - 1) - 1) // SH + 1
    ow = (W + PL + PR - DW * (KW - 1) - 1) // SW + 1
    if (oh, ow) != (OH, OW):
        raise ValueError(f"{op}: output {OH}x{OW} does not match the window arithmetic ({oh}x{ow})")
    g = dict(H=H, W=W, KH=KH, KW=KW, OH=OH, OW=OW, SH=SH, SW=SW, PT=PT, PL=PL, DH=DH, DW=DW)
    # Which ends of the tap range padding can cut for some output pixel (static facts).
    g["clip_t"] = any(o * SH - PT < 0 for o in range(OH))
    g["clip_b"] = any(o * SH - PT + (KH - 1) * DH >= H for o in range(OH))
    g["clip_l"] = any(o * SW - PL < 0 for o in range(OW))
    g["clip_r"] = any(o * SW - PL + (KW - 1) * DW >= W for o in range(OW))
    g["clip_v"] = g["clip_t"] or g["clip_b"]
    g["clip_h"] = g["clip_l"] or g["clip_r"]
    g["reads_x"] = (any(0 <= o * SH - PT + i * DH < H for o in range(OH) for i in range(KH))
                    and any(0 <= o * SW - PL + i * DW < W for o in range(OW) for i in range(KW)))
    return g


def tap_lo(o, S, P, D, K, clip):
    """First tap k with o * S - P + k * D >= 0, at most K."""
    if not clip:
        return 0
    n = P - o * S
    v = n if D == 1 else T.truncdiv(n + (D - 1), D)
    return T.Select(n > 0, T.Select(v < K, v, K), 0)


def tap_hi(o, S, P, D, N, K, clip):
    """One past the last tap k with o * S - P + k * D < N, in [0, K]."""
    if not clip:
        return K
    m = N + P - o * S
    e = m if D == 1 else T.truncdiv(m + (D - 1), D)
    return T.Select(m <= 0, 0, T.Select(e < K, e, K))


def bounds_macro(g, o=0):
    """Macro (bd, oy, ox): bd[o:o+4] = ky_lo, ky_hi, kx_lo, kx_hi of the pixel's valid taps (hi >= lo)."""
    clip_t, clip_b, clip_l, clip_r = g["clip_t"], g["clip_b"], g["clip_l"], g["clip_r"]
    KH, KW = g["KH"], g["KW"]

    @T.macro
    def body(bd, oy, ox):
        bd[o] = tap_lo(oy, g["SH"], g["PT"], g["DH"], KH, clip_t)
        bd[o + 1] = tap_hi(oy, g["SH"], g["PT"], g["DH"], g["H"], KH, clip_b)
        if clip_t and clip_b:
            bd[o + 1] = T.Select(bd[o + 1] > bd[o], bd[o + 1], bd[o])
        bd[o + 2] = tap_lo(ox, g["SW"], g["PL"], g["DW"], KW, clip_l)
        bd[o + 3] = tap_hi(ox, g["SW"], g["PL"], g["DW"], g["W"], KW, clip_r)
        if clip_l and clip_r:
            bd[o + 3] = T.Select(bd[o + 3] > bd[o + 2], bd[o + 3], bd[o + 2])

    return body


def shift_table_macro(bits, top, f):
    """Macro (Tb, o): Tb[o + c] = the shift-and-add descriptor of code c: -1 for the zero code, else
    s + 256 * (sign bit) with s = max(top - (m-1), 0) - f (the weight / 2^f is then +-2^s)."""
    n = 1 << bits
    half = n >> 1
    mmask = half - 1

    @T.macro
    def body(Tb, o):
        for c in range(n):
            Tb[o + c] = T.Select((c & mmask) == 0, -1, T.Select(c >= half, 256, 0) + T.Select(
                top + 1 - T.Select((c & mmask) > 1, c & mmask, 1) > 0,
                top + 1 - T.Select((c & mmask) > 1, c & mmask, 1), 0) - f)

    return body


def unroll_factor(n: int, limit: int = 4) -> int:
    """Largest of limit, limit/2, ..., 1 dividing n."""
    u = limit
    while n % u:
        u //= 2
    return u


@T.macro
def requantize_store32(Y, idx, acc, mult, shift, r, t, out_zp, act_min, act_max):
    """Y[idx] = int8(clamp(requantize(acc, mult, shift) + out_zp, act_min, act_max)) -- the arithmetic of
    reference/arith.py and common.requantize_store, done in 32-bit steps around one 32x32->64 multiply:

    * shift > 0 (multiplier > 1, rare): a = sat32(acc * 2^shift) in 64 bits; else a = acc;
    * SRDHM(a, M) = trunc((a*M + nudge) / 2^31) with nudge 2^30 or 1 - 2^30 by the sign of a*M equals
      floor((a*M + 2^30) / 2^31) for every a*M (M >= 0: no INT32_MIN * INT32_MIN case), one arithmetic shift;
    * RDBPOT(q, e), e = max(-shift, 0) <= 31 (quantize_multiplier never gives a shift below -31), in int32
      with a uint32 mask; the result fits int32, so it is clamped to [act_min - out_zp, act_max - out_zp]
      before out_zp is added (no overflow).

    Scratch: r (4 int32 elements), t (1 int64 element)."""
    r[0] = acc
    if shift > 0:
        t[0] = T.Cast("int64", r[0]) * T.Cast("int64", T.shift_left(1, shift))
        r[0] = T.Cast("int32", T.Select(t[0] > T.int64(2147483647), T.int64(2147483647),
                                        T.Select(t[0] < T.int64(-2147483648), T.int64(-2147483648), t[0])))
    r[1] = T.Cast("int32", T.shift_right(T.Cast("int64", r[0]) * T.Cast("int64", mult) + T.int64(1 << 30),
                                         T.int64(31)))
    r[2] = T.Select(shift < 0, 0 - shift, 0)
    r[3] = T.Cast("int32", T.shift_left(T.uint32(1), T.Cast("uint32", r[2])) - T.uint32(1))
    r[0] = T.shift_right(r[1], r[2]) + T.Select(
        (r[1] & r[3]) > T.shift_right(r[3], 1) + T.Select(r[1] < 0, 1, 0), 1, 0)
    Y[idx] = T.Cast("int8", T.Select(r[0] > act_max - out_zp, act_max - out_zp,
                                     T.Select(r[0] < act_min - out_zp, act_min - out_zp, r[0])) + out_zp)
