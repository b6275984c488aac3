/*
 * smp_ipi.S: the BSP starts every other vCPU with INIT, SIPI, SIPI (all-excluding-self
 * shorthand) into a real-mode trampoline at 0x30000 (AP_STARTUP, include/apic.inc); each AP
 * switches to 32-bit protected mode, reads its LAPIC ID and prints "ap apic id N" (under a spin
 * lock), then halts.
 * The BSP prints "bsp apic id N", waits until fw_cfg NB_CPUS - 1 APs have checked in and
 * prints "smp: N cpus up", exiting EXIT_OK (33); EXIT_FAIL (35) if they never all arrive.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define MAX_APS         320
#define AP_STACK        512

    PVH_NOTE _start

    .section .rodata
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff         /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff         /* 0x10: flat data */
gdt_end:

    .section .bss
    .balign 16
ap_stacks:
    .skip MAX_APS * AP_STACK
ncpus:    .skip 4
started:  .skip 4
ticket:   .skip 4
printlock: .skip 4

    .text
    AP_STARTUP 0x08, ap32

ap32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $1, %eax
    lock xadd %eax, ticket
    cmp $MAX_APS, %eax
    jae hang32
    inc %eax
    shl $9, %eax                     /* AP_STACK */
    add $ap_stacks, %eax
    mov %eax, %esp
    mov LAPIC_ID, %ebx
    shr $24, %ebx
1:  lock btsl $0, printlock
    jnc 2f
    pause
    jmp 1b
2:  PUTS32 "ap apic id "
    mov %ebx, %eax
    call putdec32
    call newline32
    movl $0, printlock
    lock incl started
    jmp hang32

    .globl _start
_start:
    START32
    movl $0, started
    movl $0, ticket
    movl $0, printlock
    mov $FW_CFG_NB_CPUS, %ax
    call fwcfg_select32
    mov $2, %ecx
    call fwcfg_read32
    mov %eax, ncpus
    PUTS32 "bsp apic id "
    mov LAPIC_ID, %eax
    shr $24, %eax
    call putdec32
    call newline32
    cmpl $1, ncpus
    jbe 4f

    call start_aps32

    mov $20000000, %ecx              /* seconds of emulated polling, then give up */
3:  mov started, %eax
    inc %eax
    cmp ncpus, %eax
    je 4f
    pause
    dec %ecx
    jnz 3b
    PUTS32 "smp: only "
    mov started, %eax
    inc %eax
    call putdec32
    PUTS32 " cpus up\n"
    mov $EXIT_FAIL, %al
    call exit32
4:  PUTS32 "smp: "
    mov ncpus, %eax
    call putdec32
    PUTS32 " cpus up\n"
    mov $EXIT_OK, %al
    call exit32
