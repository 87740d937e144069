/* ARM semihosting (bkpt 0xAB): file I/O and exit through the debugger or QEMU (-semihosting). */
#ifndef EP_SEMIHOST_H
#define EP_SEMIHOST_H

#include <stdint.h>

int32_t ep_sh_open(const char *path, int32_t mode); /* mode 1 = "rb", 5 = "wb"; returns handle or -1 */
int32_t ep_sh_read(int32_t fd, void *buf, uint32_t len); /* returns bytes NOT read (0 = all read) */
int32_t ep_sh_write(int32_t fd, const void *buf, uint32_t len); /* returns bytes NOT written */
int32_t ep_sh_flen(int32_t fd);
int32_t ep_sh_close(int32_t fd);
void ep_sh_write0(const char *s);
void ep_sh_exit(int success) __attribute__((noreturn));

#endif
