/*
 * heartbeat.S: prints "heartbeat" and then "beat N" (N = 1, 2, ...) every 20 ms of ACPI PM
 * timer time, forever. Tests use it to see that a stopped VM makes no progress and that
 * `cont` resumes the count where it stopped.
 *
 * Each PM_TMR read is one port exit (~9 us where CPL0 is emulated), so the wait loop stays
 * cheap. The baseline is re-read after each beat, so a long pause yields one beat, not a burst.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define BEAT_TICKS 71591              /* 20 ms at 3.579545 MHz */

    PVH_NOTE _start

    .code32
    .text
    .globl _start
_start:
    START32
    PUTS32 "heartbeat\n"
    xor %edi, %edi                    /* beat counter */
    mov $ACPI_PM_TMR, %dx
    in %dx, %eax
    mov %eax, %esi                    /* timer at the last beat */
1:  pause
    in %dx, %eax
    mov %eax, %ecx
    sub %esi, %ecx
    and $0xffffff, %ecx               /* the timer is 24 bits wide and wraps */
    cmp $BEAT_TICKS, %ecx
    jb 1b
    mov %eax, %esi
    inc %edi
    PUTS32 "beat "
    mov %edi, %eax
    call putdec32
    call newline32
    jmp 1b
