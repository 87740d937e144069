/* Helpers that generated kernels call through T.call_extern (what TIR cannot express in C).
 * Freestanding C99: needs only <stdint.h> (and, on Arm cores with the DSP / SIMD32 extension, the compiler's
 * own <arm_acle.h>). */
#ifndef EP_KERNELS_H
#define EP_KERNELS_H

#include <stdint.h>

#include "ep_dsp.h"

/* Attribute of the kernels a schedule tensorized onto DSP micro-kernels (codegen/schedules.py). On M-profile
 * cores GCC's instruction scheduling hoists every weight word's sign extension of a micro-kernel above the
 * SMLADs that use it and spills the accumulators: the 1 x 4 dense block took 30 instructions per 16 MACs with
 * five stack accesses, 25 without scheduling (arm-none-eabi-gcc 12, -O2): spills cost more than the
 * scheduling buys. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
#define EP_SCHEDULED __attribute__((optimize("no-schedule-insns", "no-schedule-insns2", "no-tree-loop-distribute-patterns")))
#else
#define EP_SCHEDULED
#endif

/* Population count of a 32-bit word (for one-off counts: the binary conv kernels count whole windows
 * with the bit-sliced helpers further down).
 *
 * Where the target has a population-count instruction and the compiler says so, __builtin_popcount
 * compiles to it: AArch64 (cnt on a NEON register + addv) and x86 built with -mpopcnt (__POPCNT__).
 * Everywhere else (Cortex-M; 32-bit Arm, NEON or not, where the scalar builtin is a libgcc call; x86
 * without popcnt; compilers without the builtin; or built with -DEP_PORTABLE_POPCOUNT) the portable
 * SWAR version: no table (no flash lookups, constant time), no builtin. arm-none-eabi-gcc -O2 for Cortex-M7
 * makes it 12 single-cycle data-processing instructions, the accumulation into the caller's sum included
 * (the multiply becomes two shifted adds). */
#if defined(__GNUC__) && !defined(EP_PORTABLE_POPCOUNT) && (defined(__aarch64__) || defined(__POPCNT__))
static inline int32_t ep_popcount32(uint32_t x) {
    return (int32_t)__builtin_popcount(x);
}
#else
static inline int32_t ep_popcount32(uint32_t x) {
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0F0F0F0Fu;
    return (int32_t)((x * 0x01010101u) >> 24);
}
#endif

/* The steps of the bit-sliced popcounts of the binary kernels (codegen/kernels/binary_common.py).
 *
 * ep_nibpop: the population count of each nibble of x (each <= 4). ep_nibsum: the sum of the two nibbles of
 * each byte of n (each nibble <= 15). The empty asm keeps the compiler from rewriting (x & 0xAAAAAAAA) >> 1
 * into (x >> 1) & 0x55555555, which Thumb-2 cannot fold into the subtraction: 5 and 3 instructions instead of
 * 7 and 4 (the masks are Thumb-2 immediates, the shifts operands). */
static inline uint32_t ep_opaque32(uint32_t x) {
#if defined(__GNUC__) && defined(__arm__)
    __asm__("" : "+r"(x));
#endif
    return x;
}

static inline uint32_t ep_nibpop(uint32_t x) {
    x = x - (ep_opaque32(x & 0xAAAAAAAAu) >> 1);
    return (x & 0x33333333u) + (ep_opaque32(x & 0xCCCCCCCCu) >> 2);
}

static inline uint32_t ep_nibsum(uint32_t n) {
    return (n & 0x0F0F0F0Fu) + (ep_opaque32(n & 0xF0F0F0F0u) >> 4);
}

/* v, unchanged, recomputed where it stands (an empty volatile asm): a weight offset pinned per pixel keeps
 * the compiler from hoisting every pair address out of the pixel loop and spilling them. */
static inline int32_t ep_pin(int32_t v) {
#if defined(__GNUC__) && defined(__arm__)
    __asm__ volatile("" : "+r"(v));
#endif
    return v;
}

/* lo, hi = x[0] ^ w[0], x[1] ^ w[1]: two consecutive words of x and of w loaded as pairs, one LDRD each on
 * M-profile Thumb-2 cores (which need only word alignment for it), where the compiler would load them one
 * by one. */
static inline void ep_xor2(uint32_t* lo, uint32_t* hi, const uint32_t* x, const uint32_t* w) {
#if defined(__GNUC__) && defined(__thumb2__) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
    uint32_t x0, x1, w0, w1;
    __asm__("ldrd %0, %1, %2" : "=r"(x0), "=r"(x1) : "m"(*(const uint64_t*)x));
    __asm__("ldrd %0, %1, %2" : "=r"(w0), "=r"(w1) : "m"(*(const uint64_t*)w));
    *lo = x0 ^ w0;
    *hi = x1 ^ w1;
#else
    *lo = x[0] ^ w[0];
    *hi = x[1] ^ w[1];
#endif
}

/* acc + the sum of the four bytes of v: one USADA8 where the core has the DSP / SIMD32 extension (Cortex-M4,
 * M7, M33 with DSP, Armv7-A), about six instructions of portable C elsewhere. */
#if defined(__ARM_FEATURE_SIMD32) && !defined(EP_PORTABLE_POPCOUNT)
#include <arm_acle.h>
static inline int32_t ep_bytesum_acc(int32_t acc, uint32_t v) {
    return (int32_t)__usada8(v, 0u, (uint32_t)acc);
}
#else
static inline int32_t ep_bytesum_acc(int32_t acc, uint32_t v) {
    v = (v & 0x00FF00FFu) + ((v >> 8) & 0x00FF00FFu);
    return acc + (int32_t)((v + (v >> 16)) & 0xFFFFu);
}
#endif

/* v clamped to [-128, 127]: one SSAT where the core has it. */
static inline int32_t ep_sat8(int32_t v) {
#if defined(__ARM_FEATURE_SAT) && defined(__GNUC__) && !defined(EP_PORTABLE_POPCOUNT)
    __asm__("ssat %0, #8, %1" : "=r"(v) : "r"(v));
    return v;
#else
    return v > 127 ? 127 : (v < -128 ? -128 : v);
#endif
}

/* requantize(acc, mult, shift) of reference/arith.py (TFLite MultiplyByQuantizedMultiplier) for an accumulator
 * held in int64, without the int64 shift overflowing: the binary kernels' general path (the accumulator leaves
 * int32 after its left shift, or shift >= 0), kept out of line. */
#if defined(__GNUC__)
__attribute__((unused, noinline, cold)) static
#else
static inline
#endif
int32_t ep_requant64(int64_t acc, int32_t mult, int32_t shift) {
    int32_t left = shift > 0 ? shift : 0, right = shift < 0 ? -shift : 0;
    int64_t x, ab, m, mask;
    if (acc > (int64_t)(INT32_MAX >> left)) {
        x = INT32_MAX;
    } else if (acc < -(int64_t)(((int64_t)1 << 31) >> left)) {
        x = INT32_MIN;
    } else {
        x = acc * ((int64_t)1 << left);
    }
    if (x == INT32_MIN && mult == INT32_MIN) {
        m = INT32_MAX;
    } else {
        ab = x * (int64_t)mult;
        m = (ab + (ab >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30))) / ((int64_t)1 << 31);
    }
    mask = ((int64_t)1 << right) - 1;
    return (int32_t)((m >> right) + ((m & mask) > (mask >> 1) + (m < 0)));
}

#endif /* EP_KERNELS_H */
