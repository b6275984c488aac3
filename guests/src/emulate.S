/*
 * emulate.S: instructions that KVM's emulator refuses on hosts that emulate
 * guest kernel mode (docs/EMULATED-KVM.md), checked one group per build so
 * that each has its own guest: -DTEST_POPCNT, -DTEST_FWAIT, -DTEST_MXCSR,
 * -DTEST_SMAP (clac/stac). On a normal KVM host they run natively and the
 * same checks hold.
 *
 * PVH (ELF64 file, 32-bit entry), then long mode at CPL 0. Memory operands
 * go through an alias mapping (PML4 slot 1: virtual ALIAS + x is physical
 * x) so that an emulator ignoring the page tables reads the wrong address;
 * faults (#UD #NM #GP #PF #MF) are caught by an IDT whose handlers record
 * vector, error code and CR2 and resume at `resume_at` with iretq.
 *
 * Prints one "<check>: ok" or "<check>: FAIL got .. want .." line per check,
 * then "emulate: all ok" and EXIT_OK (status 33), or "emulate: N failed" and
 * EXIT_FAIL (35); EXIT_UNEXPECTED (37) when the CPU lacks the feature.
 */
#include "include/lib32.inc"
#include "include/lib64.inc"
#include "include/pvh.inc"
#include "include/longmode.inc"

#define ALIAS     0x8000000000       /* PML4 slot 1 */
#define UNMAPPED  0x10000000000      /* PML4 slot 2: not present */
#define GATE64    0x8e00             /* present, DPL 0, 64-bit interrupt gate */
#define NO_FAULT  0xff

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

/* Run \insn expecting exception \vector; check vector and error code \code
 * (-1: none). */
.macro EXPECT_FAULT name, vector, code, insn:vararg
    lea .Lresume_\@(%rip), %rax
    mov %rax, resume_at(%rip)
    movq $NO_FAULT, fault_vec(%rip)
    \insn
.Lresume_\@:
    mov fault_vec(%rip), %rax
    CHECK64 "\name: vector", \vector
    mov fault_code(%rip), %rax
    CHECK64 "\name: error code", \code
.endm

/* RFLAGS & mask into %rax. */
.macro FLAGS mask
    pushfq
    pop %rax
    and $\mask, %rax
.endm

/* %rdx = alias (page-table) address of \sym. */
.macro ALIAS_OF sym
    lea \sym(%rip), %rdx
    movabs $ALIAS, %rax
    add %rax, %rdx
.endm

    PVH_NOTE _start

    .pushsection .bss
    .balign 16
idt:
    .skip 32 * 16
failures:
    .skip 8
fault_vec:
    .skip 8
fault_code:
    .skip 8
fault_cr2:
    .skip 8
resume_at:
    .skip 8
    .popsection

    .pushsection .data
    .balign 16
popcnt_data:
    .long 0x80000003                 /* 3 bits */
    .word 0xffff                     /* 16 bits */
    .word 0
mx_in:
    .long 0
mx_out:
    .long 0
    .popsection

    .pushsection .rodata
    .balign 8
idt_desc:
    .word 32 * 16 - 1
    .quad idt
    .popsection

    .code32
    .text
    .globl _start
_start:
    START32
    ENTER_LONG_MODE main64

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
    incq failures(%rip)
    ret

/* set_gate: IDT vector %rdi -> handler %rsi (SDM vol. 3A, 6.14.1). */
set_gate:
    lea idt(%rip), %rax
    shl $4, %rdi
    add %rdi, %rax
    mov %rsi, %rdx
    mov %dx, (%rax)
    movw $SEL_CODE64, 2(%rax)
    movw $GATE64, 4(%rax)
    shr $16, %rdx
    mov %dx, 6(%rax)
    shr $16, %rdx
    mov %edx, 8(%rax)
    movl $0, 12(%rax)
    ret

.macro HANDLER vector, has_code
fault_\vector:
    movq $\vector, fault_vec(%rip)
    .if \has_code
    popq fault_code(%rip)
    .else
    movq $-1, fault_code(%rip)
    .endif
    jmp fault_common
.endm
    HANDLER 6, 0
    HANDLER 7, 0
    HANDLER 13, 1
    HANDLER 14, 1
    HANDLER 16, 0

/* Record CR2 and return to resume_at (same ring: iretq). */
fault_common:
    push %rax
    mov %cr2, %rax
    mov %rax, fault_cr2(%rip)
    mov resume_at(%rip), %rax
    mov %rax, 8(%rsp)
    pop %rax
    iretq

.macro GATE vector
    mov $\vector, %edi
    lea fault_\vector(%rip), %rsi
    call set_gate
.endm

main64:
    movq $0, failures(%rip)
    GATE 6
    GATE 7
    GATE 13
    GATE 14
    GATE 16
    lidt idt_desc(%rip)
    /* Alias mapping: PML4[1] -> the identity PDPT. */
    lea lm_pdpt(%rip), %rax
    or $PTE_PRESENT_RW, %rax
    mov %rax, lm_pml4+8(%rip)
    mov %cr3, %rax
    mov %rax, %cr3

#ifdef TEST_POPCNT
    mov $1, %eax
    cpuid
    bt $23, %ecx
    jnc unsupported
    movabs $0xf0f0000000000001, %rbx
    stc
    popcnt %rbx, %rax
    CHECK64 "popcnt r64", 9
    stc
    popcnt %rbx, %rax
    FLAGS 0x8d5
    CHECK64 "popcnt flags: all clear", 0
    xor %ebx, %ebx
    stc
    popcnt %rbx, %rax
    CHECK64 "popcnt of 0", 0
    xor %ebx, %ebx
    stc
    popcnt %rbx, %rax
    FLAGS 0x8d5
    CHECK64 "popcnt of 0 flags: ZF only", 0x40
    movabs $0x8000000000000000, %r9
    popcnt %r9, %r10
    mov %r10, %rax
    CHECK64 "popcnt r10, r9", 1
    ALIAS_OF popcnt_data
    mov $-1, %rax
    popcnt (%rdx), %eax
    CHECK64 "popcnt m32 via page tables, zero-extended", 3
    movabs $0x1111222233334444, %rax
    popcntw 4(%rdx), %ax
    CHECK64 "popcnt m16, upper bits kept", 0x1111222233330010
    popcnt popcnt_data(%rip), %rax
    CHECK64 "popcnt m64 rip-relative", 19
    movabs $UNMAPPED + 0x123, %rdx
    EXPECT_FAULT "popcnt unmapped", 14, 0, popcnt (%rdx), %rax
    mov fault_cr2(%rip), %rax
    CHECK64 "popcnt unmapped: cr2", UNMAPPED + 0x123
#endif

#ifdef TEST_FWAIT
    fwait
    mov $1, %eax
    CHECK64 "fwait", 1
    mov %cr0, %rbx
    mov %rbx, %rax
    or $0xa, %rax                    /* CR0.MP | CR0.TS */
    mov %rax, %cr0
    EXPECT_FAULT "fwait with CR0.TS and MP", 7, -1, fwait
    mov %rbx, %cr0
    EXPECT_FAULT "fwait after clearing TS", NO_FAULT, -1, fwait
#endif

#ifdef TEST_MXCSR
    mov %cr4, %rax
    or $0x200, %rax                  /* CR4.OSFXSR */
    mov %rax, %cr4
    movl $0x7f80, mx_in(%rip)        /* round toward zero, all masked */
    ALIAS_OF mx_in
    ldmxcsr (%rdx)
    stmxcsr mx_out(%rip)
    mov mx_out(%rip), %eax
    CHECK64 "ldmxcsr via page tables, stmxcsr", 0x7f80
    ALIAS_OF mx_out
    movl $0, mx_out(%rip)
    stmxcsr (%rdx)
    mov mx_out(%rip), %eax
    CHECK64 "stmxcsr via page tables", 0x7f80
    movl $0x11f80, mx_in(%rip)       /* bit 16 is reserved */
    EXPECT_FAULT "ldmxcsr reserved bit", 13, 0, ldmxcsr mx_in(%rip)
    stmxcsr mx_out(%rip)
    mov mx_out(%rip), %eax
    CHECK64 "mxcsr unchanged after #GP", 0x7f80
    movabs $UNMAPPED, %rdx
    EXPECT_FAULT "stmxcsr unmapped", 14, 2, stmxcsr (%rdx)
    movl $0x1f80, mx_in(%rip)
    ldmxcsr mx_in(%rip)
    mov %cr4, %rax
    and $~0x200, %rax
    mov %rax, %cr4
    EXPECT_FAULT "ldmxcsr without CR4.OSFXSR", 6, -1, ldmxcsr mx_in(%rip)
#endif

#ifdef TEST_SMAP
    mov $7, %eax
    xor %ecx, %ecx
    cpuid
    bt $20, %ebx
    jnc unsupported
    stac
    FLAGS 0x40000
    CHECK64 "stac sets EFLAGS.AC", 0x40000
    clac
    FLAGS 0x40000
    CHECK64 "clac clears EFLAGS.AC", 0
#endif

    mov failures(%rip), %rax
    test %rax, %rax
    jnz 1f
    PUTS64 "emulate: all ok\n"
    mov $EXIT_OK, %al
    call exit64
1:  PUTS64 "emulate: "
    call putdec64
    PUTS64 " failed\n"
    mov $EXIT_FAIL, %al
    call exit64

unsupported:
    PUTS64 "emulate: the CPU lacks the instruction\n"
    mov $EXIT_UNEXPECTED, %al
    call exit64
