/*
 * pio_mmio.S: port and MMIO access sizes against QEMU's pc-testdev
 * (-device pc-testdev) and an unclaimed port. PVH (ELF64 file, 32-bit
 * entry); the MMIO half runs in long mode so that 8-byte accesses are single
 * instructions.
 *
 * pc-testdev (hw/misc/pc-testdev.c): port 0xe0 is a 4-byte register read and
 * written at any size and byte offset; 0xff000000 is a 64 KiB RAM-like MMIO
 * window. Unclaimed ports read as all-ones.
 *
 * Prints one "<check>: ok" or "<check>: FAIL got .. want .." line per check,
 * then "pio_mmio: all ok" and EXIT_OK (status 33), or
 * "pio_mmio: N failed" and EXIT_FAIL (status 35).
 */
#include "include/lib32.inc"
#include "include/lib64.inc"
#include "include/pvh.inc"
#include "include/longmode.inc"

#define UNCLAIMED_PORT 0x1234

/* Compare %eax with \want and report under \name. */
.macro CHECK32 name, want
    push %ecx
    push %esi
    mov $\want, %ecx
    .pushsection .rodata
.Lcheck32_\@: .asciz "\name"
    .popsection
    mov $.Lcheck32_\@, %esi
    call check32
    pop %esi
    pop %ecx
.endm

/* Compare %rax with \want and report under \name. */
.macro CHECK64 name, want
    push %rcx
    push %rsi
    movabs $\want, %rcx
    .pushsection .rodata
.Lcheck64_\@: .asciz "\name"
    .popsection
    lea .Lcheck64_\@(%rip), %rsi
    call check64
    pop %rsi
    pop %rcx
.endm

    PVH_NOTE _start

    .pushsection .bss
    .balign 4
failures:
    .skip 4
    .popsection

    .code32
    .text
/* check32: %esi = name, %eax = got, %ecx = want. */
check32:
    call puts32
    cmp %ecx, %eax
    jne 1f
    PUTS32 ": ok\n"
    ret
1:  PUTS32 ": FAIL got "
    call puthex32
    PUTS32 " want "
    push %eax
    mov %ecx, %eax
    call puthex32
    pop %eax
    call newline32
    incl failures
    ret

    .globl _start
_start:
    START32
    movl $0, failures

    mov $TESTDEV_IOPORT, %dx
    mov $0x12345678, %eax
    out %eax, %dx
    xor %eax, %eax
    in %dx, %eax
    CHECK32 "pio 4-byte write/read", 0x12345678

    mov $0xabcd, %ax
    out %ax, %dx
    in %dx, %eax
    CHECK32 "pio 2-byte write", 0x1234abcd
    xor %eax, %eax
    in %dx, %ax
    CHECK32 "pio 2-byte read", 0xabcd

    mov $0xef, %al
    out %al, %dx
    in %dx, %eax
    CHECK32 "pio 1-byte write", 0x1234abef
    xor %eax, %eax
    in %dx, %al
    CHECK32 "pio 1-byte read", 0xef

    mov $(TESTDEV_IOPORT + 2), %dx
    xor %eax, %eax
    in %dx, %al
    CHECK32 "pio 1-byte read at offset 2", 0x34

    mov $UNCLAIMED_PORT, %dx
    xor %eax, %eax
    in %dx, %al
    CHECK32 "unclaimed port 1-byte read", 0xff
    xor %eax, %eax
    in %dx, %ax
    CHECK32 "unclaimed port 2-byte read", 0xffff
    xor %eax, %eax
    in %dx, %eax
    CHECK32 "unclaimed port 4-byte read", 0xffffffff

    ENTER_LONG_MODE mmio_checks

    .code64
/* check64: %rsi = name, %rax = got, %rcx = want. */
check64:
    call puts64
    cmp %rcx, %rax
    jne 1f
    PUTS64 ": ok\n"
    ret
1:  PUTS64 ": FAIL got "
    call puthex64
    PUTS64 " want "
    push %rax
    mov %rcx, %rax
    call puthex64
    pop %rax
    call newline64
    incl failures(%rip)
    ret

mmio_checks:
    lea stack64_top(%rip), %rsp
    mov $TESTDEV_IOMEM, %edi

    movabs $0x1122334455667788, %rax
    mov %rax, (%rdi)
    xor %eax, %eax
    mov (%rdi), %rax
    CHECK64 "mmio 8-byte write/read", 0x1122334455667788

    movl $0xdeadbeef, 8(%rdi)
    xor %eax, %eax
    mov 8(%rdi), %eax
    CHECK64 "mmio 4-byte write/read", 0xdeadbeef

    movw $0xcafe, 12(%rdi)
    movzwl 12(%rdi), %eax
    CHECK64 "mmio 2-byte write/read", 0xcafe

    movb $0x5a, 14(%rdi)
    movzbl 14(%rdi), %eax
    CHECK64 "mmio 1-byte write/read", 0x5a

    mov (%rdi), %eax
    CHECK64 "mmio 4-byte read of the 8-byte value", 0x55667788
    movzbl 7(%rdi), %eax
    CHECK64 "mmio 1-byte read at offset 7", 0x11

    mov failures(%rip), %eax
    test %eax, %eax
    jnz 1f
    PUTS64 "pio_mmio: all ok\n"
    mov $EXIT_OK, %al
    call exit64
1:  PUTS64 "pio_mmio: "
    call putdec64
    PUTS64 " failed\n"
    mov $EXIT_FAIL, %al
    call exit64
