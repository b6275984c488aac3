/*
 * suspenddisk.S: suspend.S (RTC_WAKE) booted by PC firmware, to test the firmware's S3 resume
 * path. The boot sector reads the next 15 sectors to 0x7e00 with int 13h AH=42h, enters 32-bit
 * protected mode with a flat GDT and runs suspend.S's code, whose real-mode resume routine goes
 * to 0x6000 (below this image) and is entered by SeaBIOS's s3_resume through the FACS waking
 * vector. The disk image must be at least 16 sectors long (the test pads it).
 */
#define RTC_WAKE
#define RESUME_ADDR 0x6000
#define SUSPEND_ENTRY suspend_main
#define LOAD_SECTORS 15

    .code16
    .section .text
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    /* int 13h AH=42h: LOAD_SECTORS sectors from LBA 1 to 0000:7E00. */
    mov $dap, %si
    mov $0x42, %ah
    int $0x13
    jc 1f
    lgdt gdt_desc
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmp $0x08, $pm32
1:  mov $0x3f8, %dx
    mov $'!', %al
    out %al, %dx
2:  hlt
    jmp 2b

    .balign 4
dap:
    .byte 0x10, 0
    .word LOAD_SECTORS
    .word 0x7e00, 0
    .quad 1
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff         /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff         /* 0x10: flat data */
gdt_desc:
    .word gdt_desc - gdt - 1
    .long gdt

    .code32
pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov %ax, %ss
    jmp suspend_main

    .org 510
    .word 0xaa55

#include "suspend.S"
