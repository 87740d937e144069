/* Cortex-M harness: reads input.bin (N inputs back to back) through semihosting, runs the model on each,
 * writes output.bin (N outputs) and counts.bin (per input: total SysTick ticks, then ticks per layer, each
 * uint64 little-endian). Under QEMU -icount the ticks convert exactly to instructions. */
#include <stdint.h>

#include "model.h"
#include "semihost.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static volatile uint32_t ep_wraps;
static uint64_t ep_counts[1 + EP_MODEL_NUM_LAYERS];
static uint64_t ep_layer_t0;
static int8_t ep_input[EP_MODEL_INPUT_BYTES] __attribute__((aligned(8)));
static int8_t ep_output[EP_MODEL_OUTPUT_BYTES] __attribute__((aligned(8)));

void ep_systick_handler(void) { ep_wraps++; }

static uint64_t ep_ticks(void) {
    uint32_t w, v;
    do {
        w = ep_wraps;
        v = SYST_CVR;
    } while (w != ep_wraps);
    return ((uint64_t)w << 24) + (0xFFFFFFu - v);
}

void ep_profile_begin(uint32_t layer) {
    (void)layer;
    ep_layer_t0 = ep_ticks();
}

void ep_profile_end(uint32_t layer) { ep_counts[1 + layer] += ep_ticks() - ep_layer_t0; }

int main(void) {
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* enable, interrupt on wrap, processor clock */

    int32_t in = ep_sh_open("input.bin", 1);
    if (in < 0) {
        ep_sh_write0("edgepack: cannot open input.bin\n");
        return 1;
    }
    int32_t out = ep_sh_open("output.bin", 5);
    int32_t cnt = ep_sh_open("counts.bin", 5);
    if (out < 0 || cnt < 0) {
        ep_sh_write0("edgepack: cannot create output.bin or counts.bin\n");
        return 1;
    }
    int32_t n = ep_sh_flen(in) / (int32_t)EP_MODEL_INPUT_BYTES;
    for (int32_t i = 0; i < n; i++) {
        if (ep_sh_read(in, ep_input, EP_MODEL_INPUT_BYTES) != 0) {
            ep_sh_write0("edgepack: short read from input.bin\n");
            return 1;
        }
        for (uint32_t k = 0; k < 1 + EP_MODEL_NUM_LAYERS; k++) ep_counts[k] = 0;
        uint64_t t0 = ep_ticks();
        int rc = ep_model_run(ep_input, ep_output);
        ep_counts[0] = ep_ticks() - t0;
        if (rc != 0) {
            ep_sh_write0("edgepack: ep_model_run failed\n");
            return 1;
        }
        if (ep_sh_write(out, ep_output, EP_MODEL_OUTPUT_BYTES) != 0 ||
            ep_sh_write(cnt, ep_counts, sizeof(ep_counts)) != 0) {
            ep_sh_write0("edgepack: cannot write the outputs\n");
            return 1;
        }
    }
    ep_sh_close(in);
    ep_sh_close(out);
    ep_sh_close(cnt);
    return 0;
}
