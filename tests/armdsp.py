"""A Python model of the Arm DSP-extension instructions behind firmware/runtime/ep_dsp.h (Arm Architecture
Reference Manual, Armv7-M: SXTB16, SXTAB16, SMLAD, SMLABB, SMLATT, SSAT), on Python ints holding 32-bit
words; results are returned as signed int32 values."""

M32 = 0xFFFFFFFF


def s32(u: int) -> int:
    u &= M32
    return u - (1 << 32) if u & 0x80000000 else u


def sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def ror(x: int, n: int) -> int:
    x &= M32
    return ((x >> n) | (x << (32 - n))) & M32


def halves(x: int):
    return sext(x, 16), sext(x >> 16, 16)


def pack16(lo: int, hi: int) -> int:
    return s32((lo & 0xFFFF) | ((hi & 0xFFFF) << 16))


def sxtb16(x: int, rot: int = 0) -> int:
    x = ror(x, rot)
    return pack16(sext(x, 8), sext(x >> 16, 8))


def sxtab16(a: int, x: int, rot: int = 0) -> int:
    x = ror(x, rot)
    alo, ahi = a & 0xFFFF, (a >> 16) & 0xFFFF
    return pack16(alo + sext(x, 8), ahi + sext(x >> 16, 8))


def smlad(a: int, b: int, acc: int) -> int:
    (al, ah), (bl, bh) = halves(a), halves(b)
    return s32(acc + al * bl + ah * bh)


def smlabb(a: int, b: int, acc: int) -> int:
    return s32(acc + halves(a)[0] * halves(b)[0])


def smlatt(a: int, b: int, acc: int) -> int:
    return s32(acc + halves(a)[1] * halves(b)[1])


def smmulr(a: int, b: int) -> int:
    """SMMULR: the high word of the signed 64-bit product, rounded (0x80000000 added first)."""
    return s32((s32(a) * s32(b) + (1 << 31)) >> 32)


def ssat(x: int, bits: int) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return min(max(x, lo), hi)
