/*
 * powerbutton.S: acts on the ACPI power button (QMP system_powerdown) without interrupts.
 * Sets PWRBTN_EN in PM1a_EN, prints "powerbutton: armed", then polls PM1a_STS (one port exit
 * per read) until PWRBTN_STS is set; prints "powerbutton: pressed", clears the status bit and
 * powers off through PM1a_CNT (status 0).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

    PVH_NOTE _start

    .code32
    .text
    .globl _start
_start:
    START32
    mov $ACPI_PM1A_EN, %dx
    mov $ACPI_PM1_PWRBTN, %ax
    out %ax, %dx
    PUTS32 "powerbutton: armed\n"
    mov $ACPI_PM1A_STS, %dx
1:  pause
    in %dx, %ax
    test $ACPI_PM1_PWRBTN, %ax
    jz 1b
    PUTS32 "powerbutton: pressed\n"
    mov $ACPI_PM1_PWRBTN, %ax
    out %ax, %dx                      /* write 1 to clear */
    call poweroff32
