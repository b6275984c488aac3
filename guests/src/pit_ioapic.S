/*
 * pit_ioapic.S: the timer as an ACPI OS takes it: the MADT says ISA IRQ 0 is GSI 2, so the guest
 * masks both 8259As, routes IOAPIC pin 2 (edge, active high, vector 0x32) to this CPU, programs
 * i8254 channel 0 for 100 Hz and waits with sti; hlt. The handler prints "pit ioapic: interrupt on
 * pin 2", sends the LAPIC EOI and exits EXIT_OK (status 33); waking without it is EXIT_FAIL. On
 * QEMU and rvmm with the in-kernel irqchip, the PIT's GSI 0 reaches IOAPIC pin 2.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define PIT_VECTOR   0x32
#define PIT_PIN      2
#define PIT_100HZ    11932              /* 1193182 Hz / 100 */

    PVH_NOTE _start

    .code32
    .text
pit_handler:
    PUTS32 "pit ioapic: interrupt on pin 2\n"
    movl $0, LAPIC_EOI
    mov $EXIT_OK, %al
    call exit32

    .globl _start
_start:
    START32
    mov $PIT_VECTOR, %ecx
    mov $pit_handler, %eax
    call set_gate32
    call quiet_legacy32
    /* Pin 2: physical destination APIC 0, fixed, active high, edge, unmasked. */
    movl $IOAPIC_RTE_HI(PIT_PIN), IOAPIC_REGSEL
    movl $0, IOAPIC_WIN
    movl $IOAPIC_RTE_LO(PIT_PIN), IOAPIC_REGSEL
    movl $PIT_VECTOR, IOAPIC_WIN
    /* i8254 channel 0, lobyte/hibyte, mode 2 (rate generator), binary. */
    mov $0x34, %al
    out %al, $0x43
    mov $(PIT_100HZ & 0xff), %al
    out %al, $0x40
    mov $(PIT_100HZ >> 8), %al
    out %al, $0x40
    PUTS32 "pit ioapic: armed\n"
    sti
    hlt
    cli
    PUTS32 "pit ioapic: woke up without the interrupt\n"
    mov $EXIT_FAIL, %al
    call exit32
