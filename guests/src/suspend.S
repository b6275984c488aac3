/*
 * suspend.S: ACPI S3 (suspend to RAM) and the resume at the FACS waking vector (PVH, ELF32).
 *
 * Finds the FACS through the RSDP (scanned in 0xE0000-0xFFFFF), the XSDT (RSDP revision 2 with
 * an XSDT address) or the RSDT, and the FADT's FIRMWARE_CTRL; copies a real-mode resume routine
 * to 0x8000 and stores 0x8000 as the FACS firmware waking vector (X_Firmware_Waking_Vector 0).
 * With RTC_WAKE (suspend_rtc.elf): sets the RTC alarm two seconds ahead (seconds only; minutes
 * and hours "don't care"), AIE in register B and RTC_EN in PM1a_EN. Clears PM1a_STS, prints
 * "suspend: entering S3" and writes SLP_TYP=1 with SLP_EN to PM1a_CNT.
 *
 * On wake-up the firmware (or, without firmware, the VMM) enters 0800:0000 in real mode, which
 * enables the chipset's PM I/O block at 0x600 again (QEMU's wake-up reset disables it) and prints "resume: woke, pm1_sts XXXX" (PM1a_STS without TMR_STS, 4 hex digits: 8400 for the RTC,
 * 8100 for QMP system_wakeup) and exits with EXIT_OK. Failures print "suspend: ..." and exit
 * with EXIT_FAIL; a guest still running 200 ms after the S3 write prints "suspend: not
 * suspended".
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define CMOS_INDEX   0x70
#define CMOS_DATA    0x71
#ifndef RESUME_ADDR
#define RESUME_ADDR  0x8000
#endif
#define PM1_RTC      0x0400          /* RTC_STS / RTC_EN */
#define PM1_TMR_STS  0x0001
#define SLP_TYP_S3   (1 << 10)
#define SLP_TYP_MASK (7 << 10)
#define FACS_WAKING_VECTOR   12
#define FACS_X_WAKING_VECTOR 24
#define FADT_FIRMWARE_CTRL   36
#define FADT_X_FIRMWARE_CTRL 132

#ifndef SUSPEND_ENTRY
#define SUSPEND_ENTRY _start
    PVH_NOTE _start
    .globl _start
#endif

    .code32
    .text
SUSPEND_ENTRY:
    START32
    call find_facs
    jc fail
    mov %eax, %edi
    movl $RESUME_ADDR, FACS_WAKING_VECTOR(%edi)
    movl $0, FACS_X_WAKING_VECTOR(%edi)
    movl $0, FACS_X_WAKING_VECTOR + 4(%edi)
    /* The resume routine below 1 MiB. */
    mov $resume16, %esi
    mov $RESUME_ADDR, %edi
    mov $(resume16_end - resume16), %ecx
    rep movsb

#ifdef RTC_WAKE
    call arm_alarm
    mov $ACPI_PM1A_EN, %dx
    mov $PM1_RTC, %ax
    out %ax, %dx
#endif
    mov $ACPI_PM1A_STS, %dx
    mov $0xffff, %ax
    out %ax, %dx                     /* write 1 to clear every status bit */
    PUTS32 "suspend: entering S3\n"
    mov $ACPI_PM1A_CNT, %dx
    in %dx, %ax
    and $0xc3ff, %ax                 /* SLP_TYP and SLP_EN cleared */
    or $(SLP_TYP_S3 | ACPI_PM1_SLP_EN), %ax
    out %ax, %dx
    /* Still here: wait about 200 ms on the PM timer (716,000 ticks), then fail. */
    mov $ACPI_PM_TMR, %dx
    in %dx, %eax
    mov %eax, %ebx
1:  in %dx, %eax
    sub %ebx, %eax
    and $0xffffff, %eax
    cmp $716000, %eax
    jb 1b
    PUTS32 "suspend: not suspended\n"
    jmp fail

fail:
    PUTS32 "suspend: failed\n"
    mov $EXIT_FAIL, %al
    call exit32

/* find_facs: %eax = the FACS address, CF=1 if not found. */
find_facs:
    mov $0xe0000, %esi
1:  cmpl $0x20445352, (%esi)         /* "RSD " */
    jne 2f
    cmpl $0x20525450, 4(%esi)        /* "PTR " */
    je 3f
2:  add $16, %esi
    cmp $0x100000, %esi
    jb 1b
    PUTS32 "suspend: no RSDP\n"
    stc
    ret
3:  mov $4, %ecx                     /* entry size */
    mov 16(%esi), %ebx               /* RsdtAddress */
    cmpb $2, 15(%esi)
    jb 4f
    mov 24(%esi), %eax               /* XsdtAddress (low half) */
    test %eax, %eax
    jz 4f
    mov %eax, %ebx
    mov $8, %ecx
4:  test %ebx, %ebx
    jz 9f
    mov 4(%ebx), %edx                /* table length */
    add %ebx, %edx                   /* end */
    lea 36(%ebx), %esi               /* first entry */
5:  cmp %edx, %esi
    jae 9f
    mov (%esi), %eax
    cmpl $0x50434146, (%eax)         /* "FACP" */
    je 6f
    add %ecx, %esi
    jmp 5b
6:  mov FADT_FIRMWARE_CTRL(%eax), %ebx
    test %ebx, %ebx
    jnz 7f
    mov FADT_X_FIRMWARE_CTRL(%eax), %ebx
7:  test %ebx, %ebx
    jz 9f
    cmpl $0x53434146, (%ebx)         /* "FACS" */
    jne 9f
    mov %ebx, %eax
    clc
    ret
9:  PUTS32 "suspend: no FACS\n"
    stc
    ret

#ifdef RTC_WAKE
/* cmos_read: %al = CMOS register %al. */
cmos_read:
    out %al, $CMOS_INDEX
    in $CMOS_DATA, %al
    ret

/* cmos_write: CMOS register %al = %ah. */
cmos_write:
    out %al, $CMOS_INDEX
    mov %ah, %al
    out %al, $CMOS_DATA
    ret

/* arm_alarm: the alarm at the current second + RTC_DELAY (default 2; BCD or binary as
 * register B says), any minute and hour; AIE on; the flags in register C cleared. */
#ifndef RTC_DELAY
#define RTC_DELAY 2
#endif
arm_alarm:
1:  mov $0x0a, %al
    call cmos_read
    test $0x80, %al                  /* UIP: the time is about to change */
    jnz 1b
    mov $0x0b, %al
    call cmos_read
    mov %al, %bl                     /* register B */
    mov $0x00, %al
    call cmos_read
    test $0x04, %bl                  /* DM: binary */
    jnz 2f
    mov %al, %ah                     /* BCD to binary */
    shr $4, %ah
    and $0x0f, %al
    mov %al, %cl
    mov %ah, %al
    mov $10, %ah
    mul %ah
    add %cl, %al
2:  add $RTC_DELAY, %al
    cmp $60, %al
    jb 3f
    sub $60, %al
3:  test $0x04, %bl
    jnz 4f
    xor %ah, %ah                     /* binary to BCD */
    mov $10, %cl
    div %cl
    shl $4, %al
    or %ah, %al
4:  mov %al, %ah
    mov $0x01, %al                   /* seconds alarm */
    call cmos_write
    mov $0xc0, %ah
    mov $0x03, %al                   /* minutes alarm: any */
    call cmos_write
    mov $0x05, %al                   /* hours alarm: any */
    call cmos_write
    mov $0x0c, %al
    call cmos_read                   /* clear the flags */
    mov %bl, %ah
    or $0x20, %ah                    /* AIE */
    mov $0x0b, %al
    call cmos_write
    ret
#endif

/* The resume routine, copied to RESUME_ADDR and entered at 0800:0000 in real mode. */
    .code16
resume16:
    cli
    mov %cs, %ax
    mov %ax, %ds
    mov $(resume_msg - resume16), %si
    call resume_puts                 /* relative: runs from the copy */
    /* The wake-up reset disabled the PM I/O block on QEMU; enable it at 0x600 as an OS does when
     * it restores the chipset's config space: ICH9 LPC 00:1f.0 PMBASE and ACPI_CTRL.ACPI_EN,
     * PIIX4 PM 00:01.3 PMBA and PMREGMISC.PMIOSE (the absent one ignores the writes). */
    mov $0x8000f840, %eax
    mov $0x0601, %ebx
    call pci_write32
    mov $0x8000f844, %eax
    mov $0x80, %ebx
    call pci_write32
    mov $0x80000b40, %eax
    mov $0x0601, %ebx
    call pci_write32
    mov $0x80000b80, %eax
    mov $0x01, %ebx
    call pci_write32
    mov $ACPI_PM1A_STS, %dx
    in %dx, %ax
    and $0xfffe, %ax                 /* TMR_STS toggles on its own */
    mov %ax, %bx
    mov $4, %cx
1:  rol $4, %bx
    mov %bl, %al
    and $0x0f, %al
    add $'0', %al
    cmp $'9', %al
    jbe 2f
    add $('a' - '0' - 10), %al
2:  mov $COM1_THR, %dx
    out %al, %dx
    loop 1b
    mov $'\n', %al
    out %al, %dx
    mov $EXIT_OK, %al
    out %al, $DEBUG_EXIT_PORT
3:  hlt
    jmp 3b
pci_write32:                         /* config address %eax, value %ebx */
    mov $0xcf8, %dx
    out %eax, %dx
    mov $0xcfc, %dx
    mov %ebx, %eax
    out %eax, %dx
    ret
resume_puts:
    mov $COM1_THR, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  ret
resume_msg:
    .asciz "resume: woke, pm1_sts "
resume16_end:
    .code32
