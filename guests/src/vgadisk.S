/*
 * VGA test disk (tests/display.rs): a boot sector PC firmware loads at 0x7c00, after its VGA
 * BIOS set text mode 3 (80x25, 9x16 cells) and printed the firmware banner.
 * 1. Writes a text pattern straight to video memory at 0xb8000: row 10 holds TEXT with
 *    attribute 0x1f (white on blue), row 11 holds 16 cells 'X' with attribute
 *    (i << 4) | (15 - i) for i = 0..15. Hides the cursor (CRTC 0x0a bit 5).
 *    Prints "vgadisk: text ready" on COM1, then waits for a byte on COM1.
 * 2. Enters 32-bit protected mode, finds the VGA (1234:1111) on PCI bus 0, reads BAR0 (the
 *    linear framebuffer), sets the Bochs VBE mode 320x200x32 with the LFB through ports
 *    0x1ce/0x1cf and draws 8 bands of 25 rows, each row 8 bars of 40 pixels, bar x of band y
 *    in COLOURS[(x + y) & 7]. Prints "vgadisk: vbe ready".
 * 3. After another byte on COM1, paints a white 16x4 block at (100, 60) (a change only the
 *    framebuffer's dirty log reveals), prints "vgadisk: vbe changed" and halts.
 * COM1 is written directly (no BIOS), so the text is the same with and without the firmware's
 * serial console.
 */
#define COM1 0x3f8
#define VBE_INDEX 0x1ce
#define VBE_DATA 0x1cf
#define VBE_W 320
#define VBE_H 200

    .code16
    .section .text
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7c00, %sp
    mov $0xb800, %ax
    mov %ax, %es

    /* Row 10: TEXT in white on blue. */
    mov $text, %si
    mov $(10 * 160), %di
    mov $0x1f, %ah
1:  lodsb
    test %al, %al
    jz 2f
    stosw
    jmp 1b
    /* Row 11: 'X' in every colour pair. */
2:  mov $(11 * 160), %di
    mov $0x0f, %ah
    mov $'X', %al
    mov $16, %cx
3:  stosw
    add $0x0f, %ah
    loop 3b
    /* Cursor off. */
    mov $0x3d4, %dx
    mov $0x200a, %ax
    out %ax, %dx

    mov $ready_text, %si
    call puts16
    /* Wait for a byte on COM1 (line status bit 0). */
    mov $(COM1 + 5), %dx
4:  in %dx, %al
    test $1, %al
    jz 4b
    mov $COM1, %dx
    in %dx, %al

    lgdt gdtr
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmp $0x08, $pm32

puts16:
    mov $COM1, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  ret

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
    mov %eax, %edi

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
    xor %ebp, %ebp              /* band */
4:  mov $25, %ebx               /* rows in the band */
5:  xor %esi, %esi              /* bar */
6:  lea (%esi, %ebp), %eax
    and $7, %eax
    mov colours(, %eax, 4), %eax
    mov $40, %ecx
    rep stosl
    inc %esi
    cmp $8, %esi
    jb 6b
    dec %ebx
    jnz 5b
    inc %ebp
    cmp $8, %ebp
    jb 4b

    mov %edi, %ebp              /* end of the picture */
    mov $ready_vbe, %esi
    call puts32
    /* 3. After one more byte on COM1: a white 16x4 block at (100, 60). */
    mov $(COM1 + 5), %dx
9:  in %dx, %al
    test $1, %al
    jz 9b
    mov $(COM1), %dx
    in %dx, %al
    lea -(VBE_W * VBE_H * 4 - (60 * VBE_W + 100) * 4)(%ebp), %edi
    mov $4, %ebx
10: mov $0xffffff, %eax
    mov $16, %ecx
    rep stosl
    add $((VBE_W - 16) * 4), %edi
    dec %ebx
    jnz 10b
    mov $changed_vbe, %esi
    call puts32
8:  cli
    hlt
    jmp 8b

puts32:
    mov $COM1, %dx
7:  lodsb
    test %al, %al
    jz 1f
    out %al, %dx
    jmp 7b
1:  ret

    .balign 4
colours:
    .long 0xff0000, 0x00ff00, 0x0000ff, 0xffff00, 0xff00ff, 0x00ffff, 0xffffff, 0x804020
/* DISPI index, value: disable, 320x200, 32 bpp, enable with LFB. */
vbe_regs:
    .word 4, 0, 1, 320, 2, 200, 3, 32, 4, 0x41
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
gdtr:
    .word gdtr - gdt - 1
    .long gdt
text:       .asciz "rvmm VGA text 0123456789"
ready_text: .asciz "vgadisk: text ready\r\n"
ready_vbe:  .asciz "vgadisk: vbe ready\r\n"
changed_vbe: .asciz "vgadisk: vbe changed\r\n"

    .org 510
    .byte 0x55, 0xaa
