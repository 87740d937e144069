/* Probe of firmware/runtime/ep_dsp.h for tests/test_dsp_intrin.py: ep_model_run reads EP_PROBE_N records of
 * three int32 (a, b, acc) and writes, per record, every intrinsic as the build defines it (the instruction on
 * cores with the DSP extension) and its portable C definition, as int32 little-endian. */
#include <stdint.h>

#include "model.h"
#include "runtime/ep_kernels.h"

static void put(int8_t *out, int32_t k, int32_t v) { ep_st32a(out + 4 * k, v); }

int ep_model_run(const int8_t *input, int8_t *output) {
    for (int32_t r = 0; r < EP_PROBE_N; r++) {
        const int8_t *in = input + 12 * r;
        int8_t *out = output + 4 * EP_PROBE_OUTS * r;
        int32_t a = ep_ld32a(in), b = ep_ld32a(in + 4), acc = ep_ld32a(in + 8);
        put(out, 0, ep_sxtb16(a));
        put(out, 1, ep_sxtb16_c(a));
        put(out, 2, ep_sxtb16_ror8(a));
        put(out, 3, ep_sxtb16_ror8_c(a));
        put(out, 4, ep_sxtab16(a, b));
        put(out, 5, ep_sxtab16_c(a, b));
        put(out, 6, ep_sxtab16_ror8(a, b));
        put(out, 7, ep_sxtab16_ror8_c(a, b));
        put(out, 8, ep_smlad(a, b, acc));
        put(out, 9, ep_smlad_c(a, b, acc));
        put(out, 10, ep_smlabb(a, b, acc));
        put(out, 11, ep_smlabb_c(a, b, acc));
        put(out, 12, ep_smlatt(a, b, acc));
        put(out, 13, ep_smlatt_c(a, b, acc));
        put(out, 14, ep_sat8(acc >> (r & 15)));
        put(out, 15, ep_ld32(in + 1 + (r & 3)));
        put(out, 16, EP_DSP_NATIVE);
        int64_t d = ep_ld64a(in + 4 * (r & 1));
        put(out, 17, (int32_t)d);
        put(out, 18, (int32_t)(d >> 32));
        put(out, 19, ep_smmulr(a, b));
        put(out, 20, ep_smmulr_c(a, b));
    }
    return 0;
}
