/*
 * int3.S: a ring-0 #BP handler. Sets up an IDT whose vector 3 is a 32-bit
 * interrupt gate, executes int3; the handler prints "int3 handled" and
 * returns with iret (same ring). The guest then prints "after int3" and
 * exits with EXIT_OK (status 33), or EXIT_FAIL (35) if the handler never ran.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define IDT_VECTORS     32       /* the exception vectors */
#define GATE_INTR32     0x8e00   /* present, DPL 0, 32-bit interrupt gate */

    PVH_NOTE _start

    .section .bss
    .balign 8
idt:
    .skip IDT_VECTORS * 8
handled:
    .skip 4

    .section .rodata
    .balign 8
idt_desc:
    .word IDT_VECTORS * 8 - 1
    .long idt

    .code32
    .text
bp_handler:
    PUTS32 "int3 handled\n"
    movl $1, handled
    iret

    .globl _start
_start:
    START32
    movl $0, handled
    /* Gate 3 (Intel SDM vol. 3 section 6.11): offset split around selector and type. */
    mov $idt + 3 * 8, %edi
    mov $bp_handler, %eax
    mov %ax, (%edi)
    mov %cs, %dx             /* the loader's flat code selector */
    mov %dx, 2(%edi)
    movw $GATE_INTR32, 4(%edi)
    shr $16, %eax
    mov %ax, 6(%edi)
    lidt idt_desc

    int3
    PUTS32 "after int3\n"
    cmpl $1, handled
    jne 1f
    mov $EXIT_OK, %al
    call exit32
1:  PUTS32 "int3: handler did not run\n"
    mov $EXIT_FAIL, %al
    call exit32
