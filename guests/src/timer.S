/*
 * timer.S: a LAPIC timer interrupt reaches a handler. Arms the one-shot LAPIC timer
 * (vector 0x30, ~1 ms), waits with sti; hlt; the handler prints "timer: interrupt on vector
 * 0x30", EOIs and exits EXIT_OK (status 33). If the wait ever ends without the handler, EXIT_FAIL.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define TIMER_VECTOR 0x30

    PVH_NOTE _start

    .code32
    .text
timer_handler:
    PUTS32 "timer: interrupt on vector 0x30\n"
    movl $0, LAPIC_EOI
    mov $EXIT_OK, %al
    call exit32

    .globl _start
_start:
    START32
    mov $TIMER_VECTOR, %ecx
    mov $timer_handler, %eax
    call set_gate32
    call quiet_legacy32
    movl $0xb, LAPIC_TIMER_DIV          /* divide by 1 */
    movl $TIMER_VECTOR, LAPIC_LVT_TIMER /* one-shot, unmasked */
    movl $1000000, LAPIC_TIMER_INIT
    PUTS32 "timer: armed\n"
    sti
    hlt
    cli
    PUTS32 "timer: woke up without the interrupt\n"
    mov $EXIT_FAIL, %al
    call exit32
