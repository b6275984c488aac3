/*
 * serial_irq.S: a byte typed on stdin arrives through COM1's interrupt. Routes IOAPIC pin 4
 * (level-triggered, vector 0x31) to this CPU, enables the UART's receive interrupt, prints
 * "serial irq: waiting for input" and waits with sti; hlt. The handler reads IIR and RBR and
 * prints "serial irq: got 'c' iir 0x.." and the pin's remote IRR bit before and after the
 * LAPIC EOI ("remote irr 1 -> 0"), then exits EXIT_OK (status 33).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define SERIAL_VECTOR 0x31
#define COM1_IER 0x3f9
#define COM1_IIR 0x3fa
#define COM1_MCR 0x3fc

    PVH_NOTE _start

    .code32
    .text
/* rte4_lo: %eax = low half of redirection entry 4. */
rte4_lo:
    movl $IOAPIC_RTE_LO(4), IOAPIC_REGSEL
    mov IOAPIC_WIN, %eax
    ret

serial_handler:
    mov $COM1_IIR, %dx
    in %dx, %al
    movzbl %al, %ebx
    mov $COM1_THR, %dx
    in %dx, %al
    movzbl %al, %esi
    call rte4_lo
    mov %eax, %edi
    PUTS32 "serial irq: got '"
    mov %esi, %eax
    call putc32
    PUTS32 "' iir "
    mov %ebx, %eax
    call puthex32
    PUTS32 ", rte "
    mov %edi, %eax
    call puthex32
    PUTS32 ", remote irr "
    mov %edi, %eax
    shr $14, %eax
    and $1, %eax
    call putdec32
    movl $0, LAPIC_EOI
    PUTS32 " -> "
    call rte4_lo
    shr $14, %eax
    and $1, %eax
    call putdec32
    call newline32
    mov $EXIT_OK, %al
    call exit32

    .globl _start
_start:
    START32
    mov $SERIAL_VECTOR, %ecx
    mov $serial_handler, %eax
    call set_gate32
    call quiet_legacy32
    /* Pin 4: physical destination APIC 0, fixed, active high, level, unmasked. */
    movl $IOAPIC_RTE_HI(4), IOAPIC_REGSEL
    movl $0, IOAPIC_WIN
    movl $IOAPIC_RTE_LO(4), IOAPIC_REGSEL
    movl $(RTE_LEVEL | SERIAL_VECTOR), IOAPIC_WIN
    mov $COM1_MCR, %dx
    mov $0x08, %al               /* OUT2: the PC's IRQ enable for the UART */
    out %al, %dx
    mov $COM1_IER, %dx
    mov $0x01, %al               /* received data available */
    out %al, %dx
    PUTS32 "serial irq: waiting for input\n"
    sti
1:  hlt
    jmp 1b
