/*
 * badinsn.S: execute an instruction this host's KVM cannot emulate at CPL0
 * (xsave, with CR4.OSXSAVE set and a valid 64-byte aligned area), so the VMM
 * must stop and report the RIP and instruction bytes.
 *
 * Prints "badinsn: xsave at 0x<rip>" first. On hosts that run it natively
 * the guest prints "badinsn: xsave completed" and exits with EXIT_UNEXPECTED
 * (status 37); without XSAVE support it prints "badinsn: no xsave" and exits
 * with EXIT_FAIL (status 35).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define CPUID1_ECX_XSAVE    (1 << 26)
#define CR4_OSXSAVE         (1 << 18)
#define XCR0_X87_SSE        0x3

    PVH_NOTE _start

    .section .bss
    .balign 64
xsave_area:
    .skip 4096

    .code32
    .text
    .globl _start
_start:
    START32
    mov $1, %eax
    cpuid
    test $CPUID1_ECX_XSAVE, %ecx
    jnz 1f
    PUTS32 "badinsn: no xsave\n"
    mov $EXIT_FAIL, %al
    call exit32

1:  mov %cr4, %eax
    or $CR4_OSXSAVE, %eax
    mov %eax, %cr4
    PUTS32 "badinsn: xsave at "
    mov $xsave_insn, %eax
    call puthex32
    call newline32
    mov $xsave_area, %edi
    mov $XCR0_X87_SSE, %eax
    xor %edx, %edx
xsave_insn:
    xsave (%edi)
    PUTS32 "badinsn: xsave completed\n"
    mov $EXIT_UNEXPECTED, %al
    call exit32
