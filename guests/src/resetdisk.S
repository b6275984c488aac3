/*
 * A boot sector that resets the machine through every reset path, one per boot, and checks
 * that the firmware comes back each time. The boot count lives in CMOS byte 0x5a (battery-backed
 * RAM survives a reset; QEMU leaves it 0 at power-on). Boot 1 prints "resetdisk: boot 1" and
 * resets through the reset control register (0xcf9 <- 0x06), boot 2 through the keyboard
 * controller (0x64 <- 0xfe); boot 3 prints "resetdisk: boot 3" and powers off through ACPI
 * (0x604 <- 0x2000). (A real-mode triple fault is left out: this kind of host's KVM cannot
 * deliver it, under QEMU too; tests/guests_boot.rs covers triple-fault resets.)
 */
#define CMOS_SCRATCH 0x5a

    .code16
    .section .text
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7c00, %sp
    sti
    mov $CMOS_SCRATCH, %al
    out %al, $0x70
    in $0x71, %al
    inc %al
    mov %al, %bl
    mov $CMOS_SCRATCH, %al
    out %al, $0x70
    mov %bl, %al
    out %al, $0x71

    mov $msg, %si
    call puts
    mov %bl, %al
    add $'0', %al
    call putc
    mov $crlf, %si
    call puts
    call flush

    cmp $1, %bl
    je by_cf9
    cmp $2, %bl
    je by_kbd
    mov $0x604, %dx
    mov $0x2000, %ax
    out %ax, %dx
1:  hlt
    jmp 1b

by_cf9:
    mov $0xcf9, %dx
    mov $0x06, %al
    out %al, %dx
    jmp hang
by_kbd:
    mov $0xfe, %al
    out %al, $0x64
    jmp hang
hang:
    hlt
    jmp hang

/* SeaBIOS's serial console holds back the last character until the cursor moves on: a
 * trailing space (held back itself) pushes out the line before it. */
flush:
    mov $' ', %al
    jmp putc

puts:
    lodsb
    test %al, %al
    jz 1f
    call putc
    jmp puts
1:  ret

putc:
    push %bx
    mov $0x0e, %ah
    mov $0, %bx
    int $0x10
    pop %bx
    ret

msg:  .asciz "resetdisk: boot "
crlf: .asciz "\r\n"

    .org 510
    .byte 0x55, 0xaa
