/* Helpers that generated kernels call through T.call_extern (what TIR cannot express in C).
 * Freestanding C99: needs only <stdint.h>. */
#ifndef EP_KERNELS_H
#define EP_KERNELS_H

#include <stdint.h>

/* Population count of a 32-bit word (the XNOR-popcount kernels call it once per packed word).
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

#endif /* EP_KERNELS_H */
