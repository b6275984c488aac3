/*
 * counter.S: counts timer interrupts and prints "count N" every 5 ticks, forever. The periodic
 * LAPIC timer (vector 0x30, ~10 ms) wakes `sti; hlt`; the handler bumps a tick counter in
 * memory, EOIs and returns with iret. Snapshot tests (tests/snapshot.rs) save it at "count N"
 * and check that the restored guest goes on with "count N+1": registers, RAM, the LAPIC timer
 * and the serial port all came back. `-smp` > 1: the other vCPUs stay in wait-for-SIPI.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define TIMER_VECTOR 0x30
#define LVT_PERIODIC (1 << 17)
#define TICKS_PER_COUNT 5

    PVH_NOTE _start

    .code32
    .text
timer_handler:
    incl ticks
    movl $0, LAPIC_EOI
    iret

    .globl _start
_start:
    START32
    mov $TIMER_VECTOR, %ecx
    mov $timer_handler, %eax
    call set_gate32
    call quiet_legacy32
    movl $0xb, LAPIC_TIMER_DIV                          /* divide by 1 */
    movl $(TIMER_VECTOR | LVT_PERIODIC), LAPIC_LVT_TIMER
    movl $10000000, LAPIC_TIMER_INIT
    PUTS32 "counter: running\n"
1:  sti
    hlt
    cli
    mov ticks, %eax
    sub last, %eax
    cmp $TICKS_PER_COUNT, %eax
    jb 1b
    addl $TICKS_PER_COUNT, last
    incl count
    PUTS32 "count "
    mov count, %eax
    call putdec32
    call newline32
    jmp 1b

    .data
ticks: .long 0
last:  .long 0
count: .long 0
