/*
 * cmos.S: the CMOS RTC at ports 0x70/0x71 (PVH, ELF32).
 *
 * Waits for register A's update-in-progress bit to clear, reads the time in
 * the format register B selects (BCD or binary, 12 or 24 hours) and prints
 * "rtc: CCYY-MM-DD hh:mm:ss" in 24-hour decimal, then the memory-size bytes:
 * "cmos mem: base B ext E ext2 X high16 H above4g A cpus C" (0x15-16,
 * 0x17-18, 0x30-31, 0x34-35, 0x5b-5d, 0x5f + 1) and register D. EXIT_OK.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define CMOS_INDEX 0x70
#define CMOS_DATA  0x71
#define NMI_OFF    0x80

    PVH_NOTE _start

    .bss
regb: .long 0

    .code32
    .text
    .globl _start
_start:
    START32
    call pvh_check32
1:  mov $0x0a, %al
    call cmos_read
    test $0x80, %al
    jnz 1b
    mov $0x0b, %al
    call cmos_read
    mov %eax, regb

    PUTS32 "rtc: "
    mov $0x32, %al
    call time_field
    mov $0x09, %al
    call time_field
    PUTC32 '-'
    mov $0x08, %al
    call time_field
    PUTC32 '-'
    mov $0x07, %al
    call time_field
    PUTC32 ' '
    /* Hours: 12-hour mode keeps PM in bit 7. */
    mov $0x04, %al
    call cmos_read
    mov %eax, %ebx
    and $0x7f, %al
    call to_binary
    testb $0x02, regb
    jnz 2f
    cmp $12, %eax
    jne 3f
    xor %eax, %eax           /* 12 AM/PM -> 0 (+12 for PM below) */
3:  test $0x80, %bl
    jz 2f
    add $12, %eax
2:  call put2
    PUTC32 ':'
    mov $0x02, %al
    call time_field
    PUTC32 ':'
    mov $0x00, %al
    call time_field
    call newline32

    PUTS32 "cmos mem: base "
    mov $0x15, %al
    call cmos_read16
    call putdec32
    PUTS32 " ext "
    mov $0x17, %al
    call cmos_read16
    call putdec32
    PUTS32 " ext2 "
    mov $0x30, %al
    call cmos_read16
    call putdec32
    PUTS32 " high16 "
    mov $0x34, %al
    call cmos_read16
    call putdec32
    PUTS32 " above4g "
    mov $0x5d, %al
    call cmos_read
    shl $16, %eax
    mov %eax, %ebx
    mov $0x5b, %al
    call cmos_read16
    or %ebx, %eax
    call putdec32
    PUTS32 " cpus "
    mov $0x5f, %al
    call cmos_read
    inc %eax
    call putdec32
    PUTS32 "\nregd "
    mov $0x0d, %al
    call cmos_read
    call puthex32
    call newline32
    mov $EXIT_OK, %al
    call exit32

/* cmos_read: %eax = CMOS register %al (NMIs stay masked while the index is set). */
cmos_read:
    push %edx
    or $NMI_OFF, %al
    out %al, $CMOS_INDEX
    in $CMOS_DATA, %al
    movzbl %al, %eax
    pop %edx
    ret

/* cmos_read16: %eax = registers %al (low) and %al + 1 (high). */
cmos_read16:
    push %ebx
    push %ecx
    mov %al, %cl
    inc %al
    call cmos_read
    mov %eax, %ebx
    shl $8, %ebx
    mov %cl, %al
    call cmos_read
    or %ebx, %eax
    pop %ecx
    pop %ebx
    ret

/* to_binary: %eax = %al converted from BCD unless register B selects binary. */
to_binary:
    movzbl %al, %eax
    testb $0x04, regb
    jnz 1f
    push %edx
    mov %eax, %edx
    shr $4, %eax
    imul $10, %eax
    and $0x0f, %edx
    add %edx, %eax
    pop %edx
1:  ret

/* time_field: print time register %al as two decimal digits. */
time_field:
    call cmos_read
    call to_binary
    /* fall through */
/* put2: print %eax (0-99) as two digits. */
put2:
    cmp $10, %eax
    jae 1f
    PUTC32 '0'
1:  call putdec32
    ret
