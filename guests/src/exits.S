/*
 * exits.S: exit-path benchmark and exit-count guest (PVH, ELF32, no paging).
 *
 * Every vCPU drops to ring 3 with sysexit (IOPL=3, flat DPL3 segments; CPL0
 * code is emulated on some hosts, CPL3 code runs natively) and runs four
 * loops against pc-testdev (-device pc-testdev), each a single instruction
 * per exit:
 *   phase 1: pout= byte writes to port 0xe0     (outb)
 *   phase 2: pin=  byte reads from port 0xe0     (inb)
 *   phase 3: mw=   4-byte writes to 0xff000000   (movl to MMIO)
 *   phase 4: mr=   4-byte reads from 0xff000000  (movl from MMIO)
 * Counts come from the PVH command line (decimal, missing = 0), e.g.
 * "pout=1000 pin=500 mw=0 mr=0 cpus=2". With cpus=2 the bootstrap
 * processor starts APIC ID 1 with INIT/SIPI through the xAPIC at 0xfee00000
 * and both vCPUs run every phase (exits per phase = count * cpus).
 *
 * Serial output (COM1), nothing inside the loops:
 *   "exits: cpus C"   after the secondary vCPU reported in (if any)
 *   "P1" .. "P4"      printed just before each phase starts
 *   "end"             after every vCPU finished phase 4
 * A benchmark timestamps these lines. Then EXIT_OK (status 33); EXIT_FAIL
 * (status 35) if the secondary vCPU never starts or start_info is bad.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define SEL_KCODE       0x08
#define SEL_KDATA       0x10
#define SEL_UCODE       0x1b      /* SYSENTER_CS + 16, RPL 3 */
#define SEL_UDATA       0x23      /* SYSENTER_CS + 24, RPL 3 */
#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define EFLAGS_IOPL3    0x3000
#define LAPIC_ICR_LOW   0xfee00300
#define LAPIC_ICR_HIGH  0xfee00310
#define TRAMPOLINE      0x8000    /* SIPI vector 0x08 */
/* Give up waiting for the other vCPU after 2^SPIN_TSC_SHIFT TSC ticks (~3 s at 3 GHz). No
 * pause in spin loops: on some hosts it exits to the host kernel. */
#define SPIN_TSC_HIGH   2

    PVH_NOTE _start

    .section .rodata
key_pout: .asciz "pout="
key_pin:  .asciz "pin="
key_mw:   .asciz "mw="
key_mr:   .asciz "mr="
key_cpus: .asciz "cpus="

    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff      /* 0x08: flat code, DPL0 */
    .quad 0x00cf92000000ffff      /* 0x10: flat data, DPL0 */
    .quad 0x00cffa000000ffff      /* 0x18: flat code, DPL3 */
    .quad 0x00cff2000000ffff      /* 0x20: flat data, DPL3 */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

    .section .bss
    .balign 64
counts:                           /* pout, pin, mw, mr */
    .skip 16
ncpus:
    .skip 4
    .balign 64
phase:                            /* written by the BSP: phase the AP may run */
    .skip 4
    .balign 64
ap_phase:                         /* written by the AP: last phase it finished (or 0: ready) */
    .skip 4
    .balign 16
    .skip 4096
bsp_ustack:
    .skip 4096
ap_ustack:
    .skip 4096
ap_kstack:

    .code32
    .text
    .globl _start
_start:
    START32
    call pvh_check32
    jne fail
    call pvh_cmdline32
    mov %esi, %ebx                /* command line (or 0) */
    movl $1, ncpus
    test %ebx, %ebx
    jz 2f
    mov $key_pout, %edi
    mov $counts, %ebp
    call getnum
    mov $key_pin, %edi
    add $4, %ebp
    call getnum
    mov $key_mw, %edi
    add $4, %ebp
    call getnum
    mov $key_mr, %edi
    add $4, %ebp
    call getnum
    mov $key_cpus, %edi
    mov $ncpus, %ebp
    call getnum
2:
    lgdt gdt_desc
    ljmp $SEL_KCODE, $1f
1:  call kernel_setup
    movl $-1, ap_phase            /* the AP stores 0 once it runs in ring 3 */
    cmpl $2, ncpus
    jne 4f
    call start_ap
4:  mov $bsp_ustack, %ecx
    mov $bsp_user, %edx
    sysexit

/* getnum: if the key at %edi is on the command line at %ebx, store its value at (%ebp). */
getnum:
    mov %ebx, %esi
    mov $CMDLINE_MAX, %ecx
    call find32
    jne 1f
    call parsedec32
    jc 1f
    mov %eax, (%ebp)
1:  ret

/* kernel_setup: flat kernel segments, sysexit MSRs (per CPU), IOPL 3. */
kernel_setup:
    mov $SEL_KDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $MSR_SYSENTER_CS, %ecx
    mov $SEL_KCODE, %eax
    xor %edx, %edx
    wrmsr
    pushf
    orl $EFLAGS_IOPL3, (%esp)
    popf
    ret

/* start_ap: copy the real-mode trampoline below 1 MiB and send INIT, SIPI to APIC ID 1. */
start_ap:
    mov $ap_tramp, %esi
    mov $TRAMPOLINE, %edi
    mov $(ap_tramp_end - ap_tramp), %ecx
    rep movsb
    movl $(1 << 24), LAPIC_ICR_HIGH
    movl $0x00004500, LAPIC_ICR_LOW          /* INIT, level assert */
    movl $(1 << 24), LAPIC_ICR_HIGH
    movl $(0x00004600 | (TRAMPOLINE >> 12)), LAPIC_ICR_LOW   /* STARTUP */
    ret

fail:
    mov $EXIT_FAIL, %al
    call exit32

/* Secondary vCPU: real mode at TRAMPOLINE (CS = TRAMPOLINE >> 4, IP = 0). */
    .code16
ap_tramp:
    cli
    lgdtl %cs:(ap_gdt_desc - ap_tramp)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $SEL_KCODE, $ap_entry32
    .balign 8
ap_gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt
ap_tramp_end:

    .code32
ap_entry32:
    mov $SEL_KDATA, %ax
    mov %ax, %ss
    mov $ap_kstack, %esp
    call kernel_setup
    mov $ap_ustack, %ecx
    mov $ap_user, %edx
    sysexit

/* Ring 3 from here on. */

/* One phase's loop on this vCPU: %ebp = phase number 1..4. */
run_phase:
    push %ebx
    push %ecx
    push %edx
    push %edi
    mov counts-4(,%ebp,4), %ecx
    test %ecx, %ecx
    jz 9f
    mov $TESTDEV_IOPORT, %dx
    mov $TESTDEV_IOMEM, %edi
    cmp $2, %ebp
    je 2f
    cmp $3, %ebp
    je 3f
    cmp $4, %ebp
    je 4f
1:  out %al, %dx
    dec %ecx
    jnz 1b
    jmp 9f
2:  in %dx, %al
    dec %ecx
    jnz 2b
    jmp 9f
3:  movl %eax, (%edi)
    dec %ecx
    jnz 3b
    jmp 9f
4:  movl (%edi), %eax
    dec %ecx
    jnz 4b
9:  pop %edi
    pop %edx
    pop %ecx
    pop %ebx
    ret

user_segments:
    mov $SEL_UDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    ret

/* wait_ap: spin until ap_phase == %eax; after 2^33 TSC ticks report and fail. */
wait_ap:
    push %eax
    push %ebx
    push %ecx
    push %edx
    push %esi
    mov %eax, %ebx
    rdtsc
    mov %eax, %ecx                /* start, low half */
    mov %edx, %esi                /* start, high half */
1:  cmp %ebx, ap_phase
    je 2f
    rdtsc
    sub %ecx, %eax
    sbb %esi, %edx
    cmp $SPIN_TSC_HIGH, %edx
    jb 1b
    PUTS32 "exits: secondary vCPU did not respond\n"
    mov $EXIT_FAIL, %al
    call exit32
2:  pop %esi
    pop %edx
    pop %ecx
    pop %ebx
    pop %eax
    ret

bsp_user:
    call user_segments
    cmpl $2, ncpus
    jne 1f
    xor %eax, %eax                /* the AP stores 0 once it is in ring 3 */
    call wait_ap
1:  PUTS32 "exits: cpus "
    mov ncpus, %eax
    call putdec32
    call newline32
    mov $1, %ebp
2:  PUTS32 "P"
    mov %ebp, %eax
    call putdec32
    call newline32
    mov %ebp, phase               /* release the AP into this phase */
    call run_phase
    cmpl $2, ncpus
    jne 3f
    mov %ebp, %eax
    call wait_ap
3:  inc %ebp
    cmp $4, %ebp
    jbe 2b
    PUTS32 "end\n"
    mov $EXIT_OK, %al
    call exit32

ap_user:
    call user_segments
    movl $0, ap_phase
    mov $1, %ebp
1:  cmp %ebp, phase
    je 2f
    jmp 1b
2:  call run_phase
    mov %ebp, ap_phase
    inc %ebp
    cmp $4, %ebp
    jbe 1b
3:  jmp 3b
