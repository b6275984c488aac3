/*
 * VGA benchmark disk (benches/display.py): a boot sector that enters 32-bit protected mode,
 * finds the VGA (1234:1111) on PCI bus 0, sets the Bochs VBE mode 1024x768x32 through ports
 * 0x1ce/0x1cf and fills the linear framebuffer: the top half a pattern with many colours per
 * tile (pixel = (x & 0xff) << 16 | (y & 0xff) << 8 | (x ^ y) & 0xff), the bottom half one flat
 * colour, like a window over a desktop. Prints "vgabench: ready" on COM1. Then, for every byte
 * read from COM1, it repaints one 32x32 block (next position, next colour) and prints
 * "vgabench: changed": a small change for the VNC server to send.
 */
#define COM1 0x3f8
#define VBE_INDEX 0x1ce
#define VBE_DATA 0x1cf
#define WIDTH 1024
#define HEIGHT 768
#define BLOCK 32

    .code16
    .section .text
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7c00, %sp
    lgdt gdtr
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmp $0x08, $pm32

    .code32
pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    /* Find 1234:1111 on bus 0. */
    mov $0x80000000, %ebx
1:  mov %ebx, %eax
    mov $0xcf8, %dx
    out %eax, %dx
    mov $0xcfc, %dx
    in %dx, %eax
    cmp $0x11111234, %eax
    je 2f
    add $0x800, %ebx
    cmp $0x80010000, %ebx
    jb 1b
    hlt
2:  lea 0x10(%ebx), %eax
    mov $0xcf8, %dx
    out %eax, %dx
    mov $0xcfc, %dx
    in %dx, %eax
    and $0xfffffff0, %eax
    mov %eax, %ebp              /* LFB */

    mov $vbe_regs, %esi
    mov $5, %ecx
3:  mov $VBE_INDEX, %dx
    lodsw
    out %ax, %dx
    mov $VBE_DATA, %dx
    lodsw
    out %ax, %dx
    loop 3b

    cld
    mov %ebp, %edi
    xor %ebx, %ebx              /* y */
4:  xor %ecx, %ecx              /* x */
5:  mov %ecx, %eax
    xor %ebx, %eax
    and $0xff, %eax
    mov %bl, %ah
    mov %ecx, %edx
    and $0xff, %edx
    shl $16, %edx
    or %edx, %eax
    stosl
    inc %ecx
    cmp $WIDTH, %ecx
    jb 5b
    inc %ebx
    cmp $(HEIGHT / 2), %ebx
    jb 4b
    mov $0x3060a0, %eax
    mov $(WIDTH * HEIGHT / 2), %ecx
    rep stosl

    mov $ready, %esi
    call puts32
    xor %ebx, %ebx              /* block number */
6:  mov $(COM1 + 5), %dx        /* wait for a byte */
7:  in %dx, %al
    test $1, %al
    jz 7b
    mov $COM1, %dx
    in %dx, %al
    inc %ebx
    /* Block at x = (n * BLOCK) mod WIDTH, y = HEIGHT / 2 + 64, colour 0x00ff00 + n * 0x0b. */
    mov %ebx, %eax
    shl $5, %eax
    and $(WIDTH - 1), %eax
    lea (%ebp, %eax, 4), %edi
    add $((HEIGHT / 2 + 64) * WIDTH * 4), %edi
    imul $0x0b, %ebx, %eax
    add $0x00ff00, %eax
    mov $BLOCK, %edx
8:  mov $BLOCK, %ecx
    rep stosl
    add $((WIDTH - BLOCK) * 4), %edi
    dec %edx
    jnz 8b
    mov $changed, %esi
    call puts32
    jmp 6b

puts32:
    mov $COM1, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  ret

/* DISPI index, value: disable, 1024x768, 32 bpp, enable with LFB. */
vbe_regs:
    .word 4, 0, 1, WIDTH, 2, HEIGHT, 3, 32, 4, 0x41
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
gdtr:
    .word gdtr - gdt - 1
    .long gdt
ready:   .asciz "vgabench: ready\r\n"
changed: .asciz "vgabench: changed\r\n"

    .org 510
    .byte 0x55, 0xaa
