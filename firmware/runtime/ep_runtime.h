/* edgepack runtime: the types and hooks that generated models and kernels share.
 * Freestanding C99: needs only <stdint.h>. No malloc, no floating-point arithmetic. */
#ifndef EP_RUNTIME_H
#define EP_RUNTIME_H

#include <stdint.h>

#define EP_MAX_DIMS 6

typedef struct ep_tensor_info {
    uint32_t ndim;
    int32_t shape[EP_MAX_DIMS]; /* NHWC for images, (N, F) for vectors, up to 6-D for layouts; N is 1 */
    uint32_t bytes;
    float scale;                /* real = scale * (q - zero_point); data only, never used in arithmetic */
    int32_t zero_point;
} ep_tensor_info_t;

typedef struct ep_model_info {
    const char *name;
    ep_tensor_info_t input;
    ep_tensor_info_t output;
    uint32_t arena_bytes;
    uint32_t num_layers;
    const char *const *layer_names;
} ep_model_info_t;

/* Per-layer hooks: built with -DEP_PROFILE, model.c calls the harness's ep_profile_begin/end around each
 * layer (the Cortex-M harness counts SysTick ticks); otherwise they cost nothing. */
#ifdef EP_PROFILE
void ep_profile_begin(uint32_t layer);
void ep_profile_end(uint32_t layer);
#define EP_LAYER_BEGIN(index) ep_profile_begin(index)
#define EP_LAYER_END(index) ep_profile_end(index)
#endif
#ifndef EP_LAYER_BEGIN
#define EP_LAYER_BEGIN(index) ((void)0)
#endif
#ifndef EP_LAYER_END
#define EP_LAYER_END(index) ((void)0)
#endif

#endif /* EP_RUNTIME_H */
