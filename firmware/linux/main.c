/* Linux harness (Raspberry Pi boards, linked statically): main INPUT.bin OUTPUT.bin runs the model on each
 * input of INPUT.bin (back to back) and writes the outputs to OUTPUT.bin. */
#include <stdio.h>
#include <stdint.h>

#include "model.h"

static int8_t ep_input[EP_MODEL_INPUT_BYTES] __attribute__((aligned(8)));
static int8_t ep_output[EP_MODEL_OUTPUT_BYTES] __attribute__((aligned(8)));

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUT.bin OUTPUT.bin\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    FILE *out = fopen(argv[2], "wb");
    if (!in || !out) {
        fprintf(stderr, "edgepack: cannot open %s or %s\n", argv[1], argv[2]);
        return 1;
    }
    while (fread(ep_input, 1, EP_MODEL_INPUT_BYTES, in) == EP_MODEL_INPUT_BYTES) {
        if (ep_model_run(ep_input, ep_output) != 0) {
            fprintf(stderr, "edgepack: ep_model_run failed\n");
            return 1;
        }
        if (fwrite(ep_output, 1, EP_MODEL_OUTPUT_BYTES, out) != EP_MODEL_OUTPUT_BYTES) {
            fprintf(stderr, "edgepack: cannot write %s\n", argv[2]);
            return 1;
        }
    }
    fclose(in);
    return fclose(out) != 0;
}
