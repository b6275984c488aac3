/*
 * counter.S: counts timer interrupts and prints "count N" every 5 ticks, forever. The periodic
 * LAPIC timer (vector 0x30, ~10 ms) wakes `sti; hlt`; the handler bumps a tick counter in
 * memory, EOIs and goes back to the loop. Snapshot tests (tests/snapshot.rs) save it at "count N"
 * and check that the restored guest goes on with "count N+1": registers, RAM, the LAPIC timer
 * and the serial port all came back. `-smp` > 1: the other vCPUs stay in wait-for-SIPI.
 * With FAST defined (counter_fast.elf) it counts every ~1 ms tick.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define TIMER_VECTOR 0x30
#define LVT_PERIODIC (1 << 17)
#ifdef FAST
/* counter_fast.elf (benches/snapshot.py): "count N" every ~1 ms, so the first line after a
 * restore comes within a millisecond of the guest running again. */
#define TICKS_PER_COUNT 1
#define TIMER_INIT 1000000
#else
#define TICKS_PER_COUNT 5
#define TIMER_INIT 10000000
#endif

    PVH_NOTE _start

    .code32
    .text
/* Interrupts are only enabled in `sti; hlt`, so the handler continues after the hlt itself
 * instead of returning with iret, which this host's KVM cannot emulate for QEMU. */
timer_handler:
    mov stack, %esp
    incl ticks
    movl $0, LAPIC_EOI
    jmp woke

    .globl _start
_start:
    START32
    mov $TIMER_VECTOR, %ecx
    mov $timer_handler, %eax
    call set_gate32
    call quiet_legacy32
    movl $0xb, LAPIC_TIMER_DIV                          /* divide by 1 */
    movl $(TIMER_VECTOR | LVT_PERIODIC), LAPIC_LVT_TIMER
    movl $TIMER_INIT, LAPIC_TIMER_INIT
    PUTS32 "counter: running\n"
    mov %esp, stack
1:  sti
    hlt
woke:
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
stack: .long 0
