/*
 * pci_scan.S: enumerate PCI bus 0 through configuration mechanism #1 (ports 0xCF8/0xCFC),
 * function 0 of each of the 32 slots, printing "pci 00:SS.0 vvvv:dddd class cccccc" for each
 * present one and "pci: N functions"; then, with "ecam" on the command line, read 00:00.0's
 * ID through q35's ECAM window at 0xb0000000 ("ecam 00:00.0 vvvv:dddd"). Exits EXIT_OK (33).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/pci.inc"

#define ECAM_BASE 0xb0000000

    PVH_NOTE _start

    .section .rodata
ecam_word: .asciz "ecam"

    .code32
    .text
/* print_id: print %eax as "vvvv:dddd". */
print_id:
    push %eax
    push %eax
    shr $8, %eax
    call puthex8_32
    mov (%esp), %eax
    call puthex8_32
    PUTC32 ':'
    mov (%esp), %eax
    shr $24, %eax
    call puthex8_32
    mov (%esp), %eax
    shr $16, %eax
    call puthex8_32
    pop %eax
    pop %eax
    ret

    .globl _start
_start:
    START32
    call pvh_check32
    xor %ecx, %ecx
    xor %edi, %edi                   /* functions found */
1:  mov $0, %bl
    call cfg_read
    cmp $0xffffffff, %eax
    je 2f
    inc %edi
    PUTS32 "pci 00:"
    push %eax
    mov %cl, %al
    call puthex8_32
    pop %eax
    PUTS32 ".0 "
    call print_id
    PUTS32 " class "
    mov $8, %bl
    call cfg_read
    shr $8, %eax
    push %eax
    shr $16, %eax
    call puthex8_32
    mov (%esp), %eax
    shr $8, %eax
    call puthex8_32
    pop %eax
    call puthex8_32
    call newline32
2:  inc %ecx
    cmp $32, %ecx
    jb 1b
    PUTS32 "pci: "
    mov %edi, %eax
    call putdec32
    PUTS32 " functions\n"

    call pvh_cmdline32
    test %esi, %esi
    jz 3f
    mov $CMDLINE_MAX, %ecx
    mov $ecam_word, %edi
    call find32
    jnz 3f
    PUTS32 "ecam 00:00.0 "
    mov ECAM_BASE, %eax
    call print_id
    call newline32
3:  mov $EXIT_OK, %al
    call exit32
