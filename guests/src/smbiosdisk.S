/*
 * A disk that PC firmware boots and that prints the SMBIOS tables the firmware published.
 * The boot sector (at 0x7c00, real mode) reads the rest of the program (LBA 1-4, int 13h
 * AH=02h) to 0x7e00. Through the BIOS only (int 10h teletype output, which SeaBIOS's serial
 * console forwards to COM1), it prints:
 *   "smbios: anchor 000FXXXX v2.8 len LLLL count NNNN max MMMM table AAAAAAAA ok|BAD"
 *        for the first "_SM_" entry point on a 16-byte boundary of 0xF0000-0xFFFFF with
 *        "_DMI_" at +0x10 (ok: both checksums sum to zero);
 *   "smbios: TTLLHHHH<formatted bytes from offset 4, hex>|string 1|string 2..."
 *        for each structure up to type 127 (type, length and handle as they are stored);
 *   "smbios: done"
 * and powers off through the ACPI PM1a control register at 0x604 (SLP_EN, SLP_TYP 0). The
 * structure table is copied below 1 MiB with int 15h AH=87h, wherever the firmware put it.
 * Without an entry point it prints "smbios: no entry point"; a BIOS error "smbios: error".
 */
#define PM1A_CNT 0x604
/* The copy of the structure table: 0x20000. */
#define COPY_SEG 0x2000

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
    /* LBA 1-4 (cylinder 0, head 0, sectors 2-5) to 0x7e00. */
    mov $0x0204, %ax
    mov $0x0002, %cx
    xor %dh, %dh
    mov $0x7e00, %bx
    int $0x13
    jc fail
    jmp main

fail:
    mov $errmsg, %si
    call puts
off:
    /* SeaBIOS's serial console holds back the last character until the cursor moves on:
     * a trailing space (held back itself) pushes out the line before it. */
    mov $tail, %si
    call puts
    mov $PM1A_CNT, %dx
    mov $0x2000, %ax
    out %ax, %dx
1:  hlt
    jmp 1b

/* Teletype the NUL-terminated string at DS:SI. */
puts:
    lodsb
    test %al, %al
    jz 1f
    call putc
    jmp puts
1:  ret

/* Teletype AL. */
putc:
    pusha
    mov $0x0e, %ah
    xor %bx, %bx
    int $0x10
    popa
    ret

hex32:
    push %eax
    shr $16, %eax
    call hex16
    pop %eax
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
    push %ax
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe 1f
    add $('a' - '9' - 1), %al
1:  call putc
    pop %ax
    ret

errmsg:  .asciz "smbios: error\r\n"
tail:    .asciz " "

    .org 510
    .byte 0x55, 0xaa

main:
    /* The entry point: "_SM_" on a 16-byte boundary, "_DMI_" at +0x10. */
    mov $0xf000, %ax
    mov %ax, %es
    xor %di, %di
1:  cmpl $0x5f4d535f, %es:(%di)
    jne 2f
    cmpl $0x494d445f, %es:0x10(%di)
    jne 2f
    cmpb $0x5f, %es:0x14(%di)
    je found
2:  add $16, %di
    jnz 1b
    mov $noanchor, %si
    call puts
    jmp off

found:
    mov $anchor, %si
    call puts
    mov %di, %ax
    call hex16
    mov $ver, %si
    call puts
    mov %es:6(%di), %al
    call hex4
    mov $'.', %al
    call putc
    mov %es:7(%di), %al
    call hex4
    mov $len, %si
    call puts
    mov %es:0x16(%di), %ax
    mov %ax, table_len
    call hex16
    mov $count, %si
    call puts
    mov %es:0x1c(%di), %ax
    call hex16
    mov $max, %si
    call puts
    mov %es:8(%di), %ax
    call hex16
    mov $table, %si
    call puts
    mov %es:0x18(%di), %eax
    mov %eax, table_addr
    call hex32
    /* Checksums: bytes 0-0xf, and 0x10 to the entry point's length. */
    mov %di, %bx
    mov $16, %cx
    xor %ah, %ah
3:  add %es:(%bx), %ah
    inc %bx
    loop 3b
    movzbw %es:5(%di), %cx
    sub $16, %cx
    xor %al, %al
4:  add %es:(%bx), %al
    inc %bx
    loop 4b
    or %ah, %al
    mov $ok, %si
    jz 5f
    mov $bad, %si
5:  call puts

    /* Copy the structure table to COPY_SEG:0 (int 15h AH=87h: CX words, ES:SI the GDT). */
    mov table_addr, %eax
    mov %ax, src_desc + 2
    shr $16, %eax
    mov %al, src_desc + 4
    mov %ah, src_desc + 7
    mov table_len, %cx
    inc %cx
    shr %cx
    xor %ax, %ax
    mov %ax, %es
    mov $move_gdt, %si
    mov $0x87, %ah
    int $0x15
    jc fail

    mov $COPY_SEG, %ax
    mov %ax, %gs
    xor %si, %si
structure:
    cmp table_len, %si
    jae end
    mov %si, %di
    mov $prefix, %bp
    call puts_bp
    /* Type, length, handle, then the formatted area. */
    movzbw %gs:1(%di), %cx
    mov %cx, %dx
    add %di, %dx
6:  mov %gs:(%si), %al
    call hex8
    inc %si
    cmp %dx, %si
    jb 6b
    /* The string set: two NULs when empty, else strings, each NUL-terminated, then a NUL. */
    cmpb $0, %gs:(%si)
    jne 7f
    add $2, %si
    jmp 9f
7:  mov $'|', %al
    call putc
8:  mov %gs:(%si), %al
    inc %si
    test %al, %al
    jz 10f
    call putc
    jmp 8b
10: cmpb $0, %gs:(%si)
    jne 7b
    inc %si
9:  mov $crlf, %bp
    call puts_bp
    cmpb $127, %gs:(%di)
    jne structure
end:
    mov $done, %si
    call puts
    jmp off

/* puts for a string at DS:BP (SI is in use). */
puts_bp:
    push %si
    mov %bp, %si
    call puts
    pop %si
    ret

noanchor: .asciz "smbios: no entry point\r\n"
anchor:   .asciz "smbios: anchor 000F"
ver:      .asciz " v"
len:      .asciz " len "
count:    .asciz " count "
max:      .asciz " max "
table:    .asciz " table "
ok:       .asciz " ok\r\n"
bad:      .asciz " BAD\r\n"
prefix:   .asciz "smbios: "
crlf:     .asciz "\r\n"
done:     .asciz "smbios: done\r\n"

    .balign 4
table_addr: .long 0
table_len:  .word 0

/* int 15h AH=87h: null, GDT alias, source, destination, BIOS CS, BIOS SS. */
    .balign 8
move_gdt:
    .fill 16, 1, 0
src_desc:
    .word 0xffff, 0
    .byte 0, 0x93, 0, 0
dst_desc:
    .word 0xffff, 0
    .byte COPY_SEG >> 12, 0x93, 0, 0
    .fill 16, 1, 0

    .org 5 * 512
