/*
 * powerbutton_irq.S: acts on the ACPI power button (QMP system_powerdown) through the SCI.
 * Routes IOAPIC pin 9 (the FADT's SCI_INT; level, active high as the MADT override says) to
 * vector 0x39 on this CPU, sets PWRBTN_EN, prints "powerbutton irq: armed, sci_en 1" and waits
 * with sti; hlt. Each SCI prints "powerbutton irq: sci N, sts 0x...":
 *   - the first leaves PWRBTN_STS set and only EOIs: the level line must assert again;
 *   - the second clears PWRBTN_STS (write 1), EOIs, and waits 100 ms (PM timer) with
 *     interrupts on, counting any further SCIs;
 * then prints "powerbutton irq: extra N" and powers off through PM1a_CNT (status 0).
 * Handlers drop their frame and continue with interrupts off (no iret at CPL0 on this host).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define SCI_VECTOR 0x39
#define SCI_PIN 9
#define SETTLE_TICKS 357954          /* 100 ms of the 3.579545 MHz PM timer */

    PVH_NOTE _start

    .code32
    .text
sci_handler:
    add $12, %esp                     /* drop eip, cs, eflags: never returns */
    incl sci_count
    mov $ACPI_PM1A_STS, %dx
    in %dx, %ax
    movzwl %ax, %ebx
    PUTS32 "powerbutton irq: sci "
    mov sci_count, %eax
    call putdec32
    PUTS32 ", sts "
    mov %ebx, %eax
    call puthex32
    call newline32
    mov sci_count, %eax
    cmp $1, %eax
    je wait_sci                       /* status left set: EOI only */
    cmp $2, %eax
    jne settle                        /* a further SCI: EOI, keep settling */
    mov $ACPI_PM1A_STS, %dx
    mov $ACPI_PM1_PWRBTN, %ax
    out %ax, %dx                      /* write 1 to clear, before the EOI */
    mov $ACPI_PM_TMR, %dx
    in %dx, %eax
    mov %eax, settle_start
    jmp settle

/* EOI and wait for the next SCI. */
wait_sci:
    movl $0, LAPIC_EOI
    sti
1:  hlt                               /* sti's shadow covers hlt: no wake-up is lost */
    jmp 1b

/* EOI, then poll the PM timer with interrupts on until SETTLE_TICKS passed since settle_start. */
settle:
    movl $0, LAPIC_EOI
    sti
    mov $ACPI_PM_TMR, %dx
1:  in %dx, %eax
    sub settle_start, %eax
    and $0xffffff, %eax
    cmp $SETTLE_TICKS, %eax
    jb 1b
    cli
    PUTS32 "powerbutton irq: extra "
    mov sci_count, %eax
    sub $2, %eax
    call putdec32
    call newline32
    call poweroff32

    .globl _start
_start:
    START32
    mov $SCI_VECTOR, %ecx
    mov $sci_handler, %eax
    call set_gate32
    call quiet_legacy32
    /* Pin 9: physical destination APIC 0, fixed, active high, level, unmasked. */
    movl $IOAPIC_RTE_HI(SCI_PIN), IOAPIC_REGSEL
    movl $0, IOAPIC_WIN
    movl $IOAPIC_RTE_LO(SCI_PIN), IOAPIC_REGSEL
    movl $(RTE_LEVEL | SCI_VECTOR), IOAPIC_WIN
    mov $ACPI_PM1A_EN, %dx
    mov $ACPI_PM1_PWRBTN, %ax
    out %ax, %dx
    mov $ACPI_PM1A_CNT, %dx
    in %dx, %ax
    and $1, %eax                      /* SCI_EN: already in ACPI mode (no SMI_CMD handshake) */
    mov %eax, %ebx
    PUTS32 "powerbutton irq: armed, sci_en "
    mov %ebx, %eax
    call putdec32
    call newline32
    jmp wait_sci

    .pushsection .bss
    .balign 4
sci_count:
    .long 0
settle_start:
    .long 0
    .popsection
