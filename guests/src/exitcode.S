/*
 * exitcode.S: exit with the value given on the PVH command line as
 * "code=N" (decimal, 0-255): prints "exitcode: N" and writes N to
 * isa-debug-exit, so the VMM exits with status (N << 1) | 1. Without a
 * "code=" it prints "exitcode: no code= on the command line" and exits with
 * EXIT_FAIL (status 35).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

    PVH_NOTE _start

    .section .rodata
code_key:
    .asciz "code="

    .code32
    .text
    .globl _start
_start:
    START32
    call pvh_check32
    jne 1f
    call pvh_cmdline32
    test %esi, %esi
    jz 1f
    mov $CMDLINE_MAX, %ecx
    mov $code_key, %edi
    call find32
    jne 1f
    call parsedec32
    jc 1f
    PUTS32 "exitcode: "
    call putdec32
    call newline32
    call exit32              /* %al = N */

1:  PUTS32 "exitcode: no code= on the command line\n"
    mov $EXIT_FAIL, %al
    call exit32
