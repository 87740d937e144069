/* ARM semihosting calls for Cortex-M: operation in r0, parameter block in r1, result in r0. */
#include "semihost.h"

static int32_t ep_sh_call(int32_t op, const void *arg) {
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static uint32_t ep_strlen(const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    return n;
}

int32_t ep_sh_open(const char *path, int32_t mode) {
    uint32_t args[3] = {(uint32_t)path, (uint32_t)mode, ep_strlen(path)};
    return ep_sh_call(0x01, args);
}

int32_t ep_sh_close(int32_t fd) {
    uint32_t args[1] = {(uint32_t)fd};
    return ep_sh_call(0x02, args);
}

int32_t ep_sh_write(int32_t fd, const void *buf, uint32_t len) {
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return ep_sh_call(0x05, args);
}

int32_t ep_sh_read(int32_t fd, void *buf, uint32_t len) {
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return ep_sh_call(0x06, args);
}

int32_t ep_sh_flen(int32_t fd) {
    uint32_t args[1] = {(uint32_t)fd};
    return ep_sh_call(0x0C, args);
}

void ep_sh_write0(const char *s) { ep_sh_call(0x04, s); }

void ep_sh_exit(int success) {
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (0x20026) means success, anything else failure. */
    ep_sh_call(0x18, (const void *)(success ? 0x20026u : 0x20023u));
    for (;;) {
    }
}
