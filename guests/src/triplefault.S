/*
 * triplefault.S: print "triple fault next", load an empty IDT and execute
 * ud2: #UD cannot be delivered, nor the #GP/#DF that follow, so the CPU
 * shuts down. The VMM treats that as a reset (exit status 0 with
 * -no-reboot, as QEMU).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

    PVH_NOTE _start

    .section .rodata
    .balign 8
empty_idt:
    .word 0                  /* limit 0: no vector is deliverable */
    .long 0

    .code32
    .text
    .globl _start
_start:
    START32
    PUTS32 "triple fault next\n"
    lidt empty_idt
    ud2
    /* Only reached if the CPU somehow survived. */
    PUTS32 "triplefault: still running\n"
    mov $EXIT_UNEXPECTED, %al
    call exit32
