/*
 * vmlinux64.S: an ELF64 kernel without a PVH note. Loaders enter it like a
 * Linux vmlinux: 64-bit mode, identity paging, %rsi = struct boot_params.
 * Prints "vmlinux64 ok" and the zero page contents (see bootparams64.inc),
 * exits with EXIT_OK (status 33).
 */
#include "include/bootparams64.inc"

    .code64
    .text
    .globl _start
_start:
    BOOT_PARAMS_REPORT vmlinux64
