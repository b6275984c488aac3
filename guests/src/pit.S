/*
 * pit.S: the PC's legacy timer path, as an OS written for a PC uses it: remaps the master 8259A
 * to vectors 0x20-0x27, unmasks only IRQ 0, programs i8254 channel 0 for a 100 Hz rate (mode 2),
 * puts LINT0 in ExtINT mode (virtual wire) and waits with sti; hlt. The handler prints "pit:
 * interrupt on vector 0x20", sends the 8259A a non-specific EOI and exits EXIT_OK (status 33). If
 * the wait ends without the handler, EXIT_FAIL. Needs the in-kernel PIC and PIT
 * (kernel-irqchip=on, the default on pc and q35); under the split irqchip nothing arrives.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define PIT_VECTOR   0x20
#define LVT_EXTINT   0x700              /* delivery mode 7, unmasked */
#define PIT_100HZ    11932              /* 1193182 Hz / 100 */

    PVH_NOTE _start

    .code32
    .text
pit_handler:
    PUTS32 "pit: interrupt on vector 0x20\n"
    mov $0x20, %al                      /* non-specific EOI */
    out %al, $0x20
    mov $EXIT_OK, %al
    call exit32

    .globl _start
_start:
    START32
    mov $PIT_VECTOR, %ecx
    mov $pit_handler, %eax
    call set_gate32
    /* 8259A init: ICW1 edge + ICW4, ICW2 vector base, ICW3 cascade on IRQ 2, ICW4 8086 mode. */
    mov $0x11, %al
    out %al, $0x20
    out %al, $0xa0
    mov $0x20, %al
    out %al, $0x21
    mov $0x28, %al
    out %al, $0xa1
    mov $0x04, %al
    out %al, $0x21
    mov $0x02, %al
    out %al, $0xa1
    mov $0x01, %al
    out %al, $0x21
    out %al, $0xa1
    mov $0xfe, %al                      /* only IRQ 0 */
    out %al, $0x21
    mov $0xff, %al
    out %al, $0xa1
    /* LVT writes while the LAPIC is software-disabled keep the mask bit (SDM 11.4.7.2): enable first. */
    movl $(LAPIC_SVR_ENABLE | 0xff), LAPIC_SVR
    movl $LVT_EXTINT, LAPIC_LVT_LINT0
    /* i8254 channel 0, lobyte/hibyte, mode 2 (rate generator), binary. */
    mov $0x34, %al
    out %al, $0x43
    mov $(PIT_100HZ & 0xff), %al
    out %al, $0x40
    mov $(PIT_100HZ >> 8), %al
    out %al, $0x40
    PUTS32 "pit: armed\n"
    sti
    hlt
    cli
    PUTS32 "pit: woke up without the interrupt\n"
    mov $EXIT_FAIL, %al
    call exit32
