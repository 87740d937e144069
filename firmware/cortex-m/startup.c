/* Cortex-M start-up: vector table, reset handler (copy .data, zero .bss, enable the FPU), fault handlers. */
#include <stdint.h>

#include "semihost.h"

extern uint32_t _ep_data_load, _ep_data_start, _ep_data_end, _ep_bss_start, _ep_bss_end, _ep_stack_top;
extern int main(void);
void ep_reset_handler(void);
void ep_systick_handler(void);

static void ep_fault_handler(void) {
    ep_sh_write0("edgepack: hard fault\n");
    ep_sh_exit(0);
}

static void ep_default_handler(void) {
    ep_sh_write0("edgepack: unexpected interrupt\n");
    ep_sh_exit(0);
}

__attribute__((section(".vectors"), used)) static void (*const ep_vectors[16])(void) = {
    (void (*)(void))(&_ep_stack_top), /* initial stack pointer */
    ep_reset_handler,
    ep_default_handler,  /* NMI */
    ep_fault_handler,    /* HardFault */
    ep_fault_handler,    /* MemManage */
    ep_fault_handler,    /* BusFault */
    ep_fault_handler,    /* UsageFault */
    ep_fault_handler,    /* SecureFault (v8-M) */
    0, 0, 0,
    ep_default_handler,  /* SVCall */
    ep_default_handler,  /* DebugMonitor */
    0,
    ep_default_handler,  /* PendSV */
    ep_systick_handler,  /* SysTick */
};

void ep_reset_handler(void) {
    uint32_t *src = &_ep_data_load, *dst = &_ep_data_start;
    while (dst < &_ep_data_end) *dst++ = *src++;
    for (dst = &_ep_bss_start; dst < &_ep_bss_end; dst++) *dst = 0;
#if defined(__ARM_FP)
    /* CPACR: full access to CP10 and CP11 (the FPU), in case the compiler uses FP registers. */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile("dsb\n isb" ::: "memory");
#endif
    ep_sh_exit(main() == 0);
}
