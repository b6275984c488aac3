/*
 * pio_bench.S: port-I/O exit rate benchmark (benches/pio_exits.py). Every vCPU (the BSP starts
 * the others with INIT/SIPI, as smp_ipi.S) drops to ring 3 with sysexit (IOPL 3, so `out` is
 * allowed there) and runs `out %al, $0x80` n times (n from "n=N" on the command line), natively
 * at CPL3, one KVM_EXIT_IO each. Then it re-enters ring 0 with sysenter and halts; the last vCPU
 * to finish exits with EXIT_OK (status 33). Prints "pio_bench: C cpus x N" before the loops.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define MAX_CPUS        64
#define CPU_STACK       512
#define MSR_SYSENTER_CS  0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define KERNEL_CS       0x08
#define USER_DS         0x23           /* GDT entry 4, RPL 3 */

    PVH_NOTE _start

    .section .rodata
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff         /* 0x08: ring 0 code (SYSENTER_CS) */
    .quad 0x00cf92000000ffff         /* 0x10: ring 0 data (SYSENTER_CS + 8) */
    .quad 0x00cffa000000ffff         /* 0x18: ring 3 code (SYSENTER_CS + 16) */
    .quad 0x00cff2000000ffff         /* 0x20: ring 3 data (SYSENTER_CS + 24) */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt
n_word: .asciz "n="

    .section .bss
    .balign 16
stacks:
    .skip MAX_CPUS * CPU_STACK
ncpus:     .skip 4
iterations: .skip 4
remaining: .skip 4
ticket:    .skip 4

    .text
    AP_STARTUP KERNEL_CS, ap32

ap32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    jmp cpu_main

/* cpu_main: every CPU, ring 0, flat segments: own stack, sysenter MSRs, drop to ring 3. */
cpu_main:
    mov $1, %eax
    lock xadd %eax, ticket
    cmp $MAX_CPUS, %eax
    jae hang32
    inc %eax
    shl $9, %eax                     /* CPU_STACK */
    add $stacks, %eax
    mov %eax, %esp
    mov %eax, %ebx
    xor %edx, %edx
    mov $MSR_SYSENTER_CS, %ecx
    mov $KERNEL_CS, %eax
    wrmsr
    mov $MSR_SYSENTER_ESP, %ecx
    mov %ebx, %eax
    wrmsr
    mov $MSR_SYSENTER_EIP, %ecx
    mov $back_in_ring0, %eax
    wrmsr
    pushf
    orl $0x3000, (%esp)              /* IOPL 3 */
    popf
    mov $USER_DS, %ax
    mov %ax, %ds
    mov %ax, %es
    mov $user_loop, %edx
    lea -16(%ebx), %ecx
    sysexit

/* Ring 3: the measured loop. */
user_loop:
    mov iterations, %ecx
    test %ecx, %ecx
    jz 2f
1:  out %al, $0x80
    dec %ecx
    jnz 1b
2:  sysenter

back_in_ring0:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    lock decl remaining
    jnz hang32
    mov $EXIT_OK, %al
    call exit32

    .globl _start
_start:
    START32
    lgdt gdt_desc
    ljmp $KERNEL_CS, $1f
1:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    movl $0, ticket
    movl $0, iterations
    call pvh_check32
    call pvh_cmdline32
    test %esi, %esi
    jz 2f
    mov $CMDLINE_MAX, %ecx
    mov $n_word, %edi
    call find32
    jnz 2f
    call parsedec32
    mov %eax, iterations
2:  mov $FW_CFG_NB_CPUS, %ax
    call fwcfg_select32
    mov $2, %ecx
    call fwcfg_read32
    mov %eax, ncpus
    mov %eax, remaining
    PUTS32 "pio_bench: "
    call putdec32
    PUTS32 " cpus x "
    mov iterations, %eax
    call putdec32
    call newline32
    cmpl $1, ncpus
    jbe 3f
    call start_aps32
3:  jmp cpu_main
