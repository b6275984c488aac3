/*
 * A disk that PC firmware boots: this boot sector, loaded by the BIOS at 0x7c00 in real mode.
 * Through the BIOS only (int 10h teletype output, which SeaBIOS's serial console forwards to
 * COM1; int 13h extended reads), it prints:
 *   "bootdisk: N vCPUs, M MiB RAM"                  (fw_cfg NB_CPUS and RAM_SIZE)
 *   "bootdisk: drive XX, SSSSSSSSSSSSSSSS sectors"  (int 13h AH=48h)
 *   "lba1: <the NUL-terminated string at the start of LBA 1>"
 *   "lbahigh: <the string at LBA 0x10000008>"        only if the disk has that sector (LBA48)
 *   "bootdisk: done"
 * then powers off through the ACPI PM1a control register at 0x604 (SLP_EN, SLP_TYP 0), where
 * SeaBIOS puts PMBASE on rvmm and QEMU (pc and q35). A read error prints "error AH=XX".
 */
#define PM1A_CNT 0x604
#define HIGH_LBA 0x10000008
#define BUF 0x9000

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
    sti
    mov %dl, drive

    /* fw_cfg (QEMU's firmware interface, ports 0x510/0x511): vCPUs and RAM. */
    mov $info, %si
    call puts
    mov $0x05, %al
    call fwcfg_read8
    movzwl params, %eax
    call dec32
    mov $vcpus, %si
    call puts
    mov $0x03, %al
    call fwcfg_read8
    mov params, %eax
    mov params + 4, %edx
    shrd $20, %edx, %eax
    call dec32
    mov $ram, %si
    call puts

    mov $banner, %si
    call puts
    mov drive, %al
    call hex8
    /* int 13h AH=48h: drive parameters, total sectors at +0x10. */
    movw $0x1e, params
    mov $params, %si
    mov $0x48, %ah
    mov drive, %dl
    int $0x13
    jc fail
    mov $sep, %si
    call puts
    mov params + 0x10 + 6, %ax
    call hex16
    mov params + 0x10 + 4, %ax
    call hex16
    mov params + 0x10 + 2, %ax
    call hex16
    mov params + 0x10, %ax
    call hex16
    mov $sectors, %si
    call puts

    movl $1, dap_lba
    mov $lba1, %si
    call read_and_print

    /* The high sector, if the disk reaches it (upper dword of the count nonzero or low above);
     * all ones means unknown (CD-ROMs), not large. */
    cmpl $0xffffffff, params + 0x10 + 4
    je 2f
    cmpl $0, params + 0x10 + 4
    jne 1f
    cmpl $HIGH_LBA, params + 0x10
    jbe 2f
1:  movl $HIGH_LBA, dap_lba
    mov $lbahigh, %si
    call read_and_print
2:
    mov $done, %si
    call puts
off:
    /* SeaBIOS's serial console holds back the last character until the cursor moves on:
     * a trailing space (held back itself) pushes out the line before it. */
    mov $tail, %si
    call puts
    mov $PM1A_CNT, %dx
    mov $0x2000, %ax
    out %ax, %dx
3:  hlt
    jmp 3b

fail:
    push %ax
    mov $errmsg, %si
    call puts
    pop %ax
    mov %ah, %al
    call hex8
    mov $crlf, %si
    call puts
    jmp off

/* Print the label at SI, read one sector at dap_lba into BUF and print its string. */
read_and_print:
    call puts
    mov $dap, %si
    mov $0x42, %ah
    mov drive, %dl
    int $0x13
    jc fail
    movb $0, BUF + 64
    mov $BUF, %si
    call puts
    mov $crlf, %si
    jmp puts

/* Read 8 bytes of fw_cfg item AL into params. */
fwcfg_read8:
    mov $0x510, %dx
    xor %ah, %ah
    out %ax, %dx
    inc %dx
    mov $params, %di
    mov $8, %cx
1:  in %dx, %al
    stosb
    loop 1b
    ret

/* Print EAX in decimal. */
dec32:
    mov $10, %ecx
    xor %bp, %bp
1:  xor %edx, %edx
    div %ecx
    push %dx
    inc %bp
    test %eax, %eax
    jnz 1b
2:  pop %ax
    call hex4
    dec %bp
    jnz 2b
    ret

/* Teletype the NUL-terminated string at DS:SI. */
puts:
    lodsb
    test %al, %al
    jz 1f
    mov $0x0e, %ah
    mov $0, %bx
    int $0x10
    jmp puts
1:  ret

hex16:
    push %ax
    mov %ah, %al
    call hex8
    pop %ax
hex8:
    push %ax
    shr $4, %al
    call hex4
    pop %ax
hex4:
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe 1f
    add $7, %al
1:  mov $0x0e, %ah
    mov $0, %bx
    int $0x10
    ret

info:    .asciz "\r\nbootdisk: "
vcpus:   .asciz " vCPUs, "
ram:     .asciz " MiB RAM\r\n"
banner:  .asciz "bootdisk: drive "
sep:     .asciz ", "
sectors: .asciz " sectors\r\n"
lba1:    .asciz "lba1: "
lbahigh: .asciz "lbahigh: "
done:    .asciz "bootdisk: done\r\n"
errmsg:  .asciz "error AH="
crlf:    .asciz "\r\n"
tail:    .asciz " "

    .balign 4
dap:     .byte 0x10, 0
         .word 1            /* one sector */
         .word BUF, 0       /* offset, segment */
dap_lba: .long 0, 0
drive:   .byte 0

    .org 510
    .byte 0x55, 0xaa
/* LBA 1 of the built-in disk. */
    .asciz "rvmm's built-in disk, read through int 13h"
    .org 1024
params:
