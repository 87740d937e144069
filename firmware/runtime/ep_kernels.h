/* Helpers that generated kernels call through T.call_extern (what TIR cannot express in C). */
#ifndef EP_KERNELS_H
#define EP_KERNELS_H

#include <stdint.h>

/* Population count of a 32-bit word: portable SWAR bit tricks (no table, no builtin). */
static inline int32_t ep_popcount32(uint32_t x) {
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0F0F0F0Fu;
    return (int32_t)((x * 0x01010101u) >> 24);
}

#endif /* EP_KERNELS_H */
