/* The Cortex-M DSP (Armv7E-M / Armv8-M DSP extension, also Armv7-A) instructions that the DSP schedules'
 * micro-kernels call through T.call_extern (codegen/kernels/intrin_dsp.py), and word loads and stores.
 *
 * Where the compiler targets a core with the DSP extension (__ARM_FEATURE_DSP: cortex-m4, m7, m33, the
 * armhf Raspberry Pi boards) each is the ACLE intrinsic, i.e. one instruction; everywhere else (the host
 * build, aarch64, cores without DSP, or built with -DEP_PORTABLE_DSP) it is portable C99 that computes the
 * same 32-bit result bit for bit (tests/test_dsp_intrin.py checks both against a Python model of the Arm
 * semantics, on the host and on every emulated board). No undefined behaviour: lanes are computed in
 * uint32_t and wrap as the instructions do. (Saturation to int8 is ep_sat8 in ep_kernels.h.)
 *
 *   ep_sxtb16(x)         = (sext8(x[23:16]) << 16) | (sext8(x[7:0]) & 0xFFFF)        SXTB16
 *   ep_sxtb16_ror8(x)    = ep_sxtb16(x ror 8): lanes from bytes 1 and 3               SXTB16 ..., ROR #8
 *   ep_sxtab16(a, x)     = per 16-bit lane: a.lane + sext8(byte 0 / 2 of x), mod 2^16  SXTAB16
 *   ep_sxtab16_ror8(a,x) = ep_sxtab16(a, x ror 8)                                     SXTAB16 ..., ROR #8
 *   ep_smlad(a, b, acc)  = acc + a.lo * b.lo + a.hi * b.hi (signed 16 x 16), mod 2^32 SMLAD
 *   ep_smlabb(a, b, acc) = acc + a.lo * b.lo, mod 2^32                                SMLABB
 *   ep_smlatt(a, b, acc) = acc + a.hi * b.hi, mod 2^32                                SMLATT
 *   ep_smmulr(a, b)      = (a * b + 2^31) >> 32, the rounded high word of the 64-bit product   SMMULR
 *   ep_ld32(p)           = the 4 bytes at p (any alignment) as an int32, little-endian
 *   ep_ld32a(p) / ep_st32a(p, v): the same at a 4-byte aligned address
 *   ep_ld64a(p)          = the 8 bytes at a 4-byte aligned p as an int64, little-endian: one LDRD on M-profile
 *                          cores (which need only word alignment for it; the compiler would load two words)
 */
#ifndef EP_DSP_H
#define EP_DSP_H

#include <stdint.h>

#if defined(__GNUC__)
typedef int32_t __attribute__((may_alias, aligned(1))) ep_u32_t;
typedef int32_t __attribute__((may_alias, aligned(4))) ep_a32_t;
static inline int32_t ep_ld32(const void* p) { return *(const ep_u32_t*)p; }
static inline int32_t ep_ld32a(const void* p) { return *(const ep_a32_t*)p; }
static inline void ep_st32a(void* p, int32_t v) { *(ep_a32_t*)p = v; }
typedef int64_t __attribute__((may_alias, aligned(4))) ep_a64_t;
#if defined(__thumb2__) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
static inline int64_t ep_ld64a(const void* p) {
    int64_t r;
    /* "Uv": a register plus an immediate multiple of 4 within +-1020, the addressing LDRD has */
    __asm__("ldrd %Q0, %R0, %1" : "=r"(r) : "Uv"(*(const ep_a64_t*)p));
    return r;
}
#else
static inline int64_t ep_ld64a(const void* p) { return *(const ep_a64_t*)p; }
#endif
#else
static inline int32_t ep_ld32(const void* p) {
    const uint8_t* b = (const uint8_t*)p;
    return (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24));
}
static inline int32_t ep_ld32a(const void* p) { return ep_ld32(p); }
static inline int64_t ep_ld64a(const void* p) {
    return (int64_t)(((uint64_t)(uint32_t)ep_ld32(p)) | ((uint64_t)(uint32_t)ep_ld32((const uint8_t*)p + 4) << 32));
}
static inline void ep_st32a(void* p, int32_t v) {
    uint8_t* b = (uint8_t*)p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)((uint32_t)v >> 8);
    b[2] = (uint8_t)((uint32_t)v >> 16);
    b[3] = (uint8_t)((uint32_t)v >> 24);
}
#endif

/* Portable definitions (always available, for the tests; the ep_* names below use them off-DSP). */
static inline uint32_t ep_sext8_lane_c(uint32_t byte) { return ((byte & 0xFFu) ^ 0x80u) - 0x80u; }

static inline int32_t ep_sxtb16_c(int32_t x) {
    uint32_t u = (uint32_t)x;
    return (int32_t)((ep_sext8_lane_c(u) & 0xFFFFu) | (ep_sext8_lane_c(u >> 16) << 16));
}

static inline int32_t ep_sxtb16_ror8_c(int32_t x) { return ep_sxtb16_c((int32_t)((uint32_t)x >> 8 | (uint32_t)x << 24)); }

static inline int32_t ep_sxtab16_c(int32_t a, int32_t x) {
    uint32_t ua = (uint32_t)a, ux = (uint32_t)x;
    uint32_t lo = (ua + ep_sext8_lane_c(ux)) & 0xFFFFu;
    uint32_t hi = ((ua >> 16) + ep_sext8_lane_c(ux >> 16)) & 0xFFFFu;
    return (int32_t)(lo | (hi << 16));
}

static inline int32_t ep_sxtab16_ror8_c(int32_t a, int32_t x) {
    return ep_sxtab16_c(a, (int32_t)((uint32_t)x >> 8 | (uint32_t)x << 24));
}

static inline int32_t ep_lo16_c(int32_t a) { return (int32_t)(((uint32_t)a & 0xFFFFu) ^ 0x8000u) - 0x8000; }
static inline int32_t ep_hi16_c(int32_t a) { return (int32_t)(((uint32_t)a >> 16) ^ 0x8000u) - 0x8000; }

static inline int32_t ep_smlad_c(int32_t a, int32_t b, int32_t acc) {
    /* each product fits int32 (|p| <= 2^30); the sum wraps like the instruction */
    return (int32_t)((uint32_t)acc + (uint32_t)(ep_lo16_c(a) * ep_lo16_c(b)) + (uint32_t)(ep_hi16_c(a) * ep_hi16_c(b)));
}

static inline int32_t ep_smlabb_c(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(ep_lo16_c(a) * ep_lo16_c(b)));
}

static inline int32_t ep_smlatt_c(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(ep_hi16_c(a) * ep_hi16_c(b)));
}

static inline int32_t ep_smmulr_c(int32_t a, int32_t b) {
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 31)) >> 32);
}

#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__) && !defined(EP_PORTABLE_DSP)
#include <arm_acle.h>
#define EP_DSP_NATIVE 1
static inline int32_t ep_sxtb16(int32_t x) { return (int32_t)__sxtb16((uint32_t)x); }
static inline int32_t ep_sxtab16(int32_t a, int32_t x) { return (int32_t)__sxtab16((uint32_t)a, (uint32_t)x); }
/* the rotation as the instruction's ROR #8 operand: GCC 12 emits a separate ROR for __sxtb16(rotate(x)) */
static inline int32_t ep_sxtb16_ror8(int32_t x) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline int32_t ep_sxtab16_ror8(int32_t a, int32_t x) {
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
static inline int32_t ep_smlad(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)__smlad((uint32_t)a, (uint32_t)b, acc);
}
static inline int32_t ep_smlabb(int32_t a, int32_t b, int32_t acc) { return __smlabb(a, b, acc); }
static inline int32_t ep_smlatt(int32_t a, int32_t b, int32_t acc) { return __smlatt(a, b, acc); }
static inline int32_t ep_smmulr(int32_t a, int32_t b) {
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#else
#define EP_DSP_NATIVE 0
static inline int32_t ep_sxtb16(int32_t x) { return ep_sxtb16_c(x); }
static inline int32_t ep_sxtb16_ror8(int32_t x) { return ep_sxtb16_ror8_c(x); }
static inline int32_t ep_sxtab16(int32_t a, int32_t x) { return ep_sxtab16_c(a, x); }
static inline int32_t ep_sxtab16_ror8(int32_t a, int32_t x) { return ep_sxtab16_ror8_c(a, x); }
static inline int32_t ep_smlad(int32_t a, int32_t b, int32_t acc) { return ep_smlad_c(a, b, acc); }
static inline int32_t ep_smlabb(int32_t a, int32_t b, int32_t acc) { return ep_smlabb_c(a, b, acc); }
static inline int32_t ep_smlatt(int32_t a, int32_t b, int32_t acc) { return ep_smlatt_c(a, b, acc); }
static inline int32_t ep_smmulr(int32_t a, int32_t b) { return ep_smmulr_c(a, b); }
#endif

#endif /* EP_DSP_H */
