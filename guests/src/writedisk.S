/*
 * A boot sector that writes to its own disk forever, for tests that kill the VMM mid-write
 * (tests/image_locking.rs). It prints "writedisk: writing", then writes 8 sectors (4 KiB) at
 * a time through int 13h extensions (AH=43h), each at the next 64 KiB boundary (so a qcow2
 * image allocates a cluster per write) from LBA 128 up to LIMIT, and round again, each write
 * followed by an ATA FLUSH CACHE so the image's metadata is written too (unless byte 509 of
 * the sector is 0); the first word of each write is its count. After 64 writes it prints "writedisk: 64 writes". A failed
 * write prints "writedisk: FAIL" and halts. Sector 0 (this code) is never written.
 */
#define LIMIT   (128 * 2048 - 8)    /* the last 4 KiB of a 128 MiB disk */
#define BUF     0x8000

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
    mov $msg, %si
    call puts
    call flush

next:
    movl lba, %eax
    addl $128, %eax
    cmpl $LIMIT, %eax
    jbe 1f
    movl $128, %eax
1:  movl %eax, lba
    movl %eax, dap_lba
    incw count
    movw count, %ax
    movw %ax, BUF
    mov $dap, %si
    mov $0x43, %ah
    xor %al, %al
    mov drive, %dl
    int $0x13
    jc fail
    cmpb $0, flush_each
    je 1f
    call ata_flush
1:
    cmpw $64, count
    jne next
    mov $msg64, %si
    call puts
    call flush
    jmp next

fail:
    mov $failmsg, %si
    call puts
    call flush
hang:
    hlt
    jmp hang

/* ATA FLUSH CACHE (E7h) to the primary channel's master, the boot disk on pc (int 13h has no
 * flush); waits while the drive is busy. */
ata_flush:
    mov $0x1f7, %dx
    mov $0xe7, %al
    out %al, %dx
1:  in %dx, %al
    test $0x80, %al
    jnz 1b
    ret

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

    .balign 4
/* The int 13h extensions' disk address packet. */
dap:     .byte 0x10, 0
         .word 8                /* sectors */
         .word BUF, 0           /* buffer offset, segment */
dap_lba: .long 0, 0
lba:     .long 0
count:   .word 0
drive:   .byte 0

msg:     .asciz "writedisk: writing\r\n"
msg64:   .asciz "writedisk: 64 writes\r\n"
failmsg: .asciz "writedisk: FAIL\r\n"

/* The test clears it to leave flushing to the VMM's exit path. */
    .org 509
flush_each: .byte 1
    .byte 0x55, 0xaa
