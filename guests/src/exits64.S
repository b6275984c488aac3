/*
 * exits64.S: exits.S's four loops (pout=, pin=, mw=, mr= on the PVH
 * command line) from 64-bit ring-3 code with paging on, one vCPU: the mode
 * Linux user space runs in. Enters through PVH (32-bit), switches to long
 * mode with identity page tables that allow user access (0-1 GiB and
 * 3-4 GiB, 2 MiB pages), then sysexitq to ring 3 with IOPL 3.
 * Prints "exits: cpus 1", "P1".."P4" before each loop and "end", then
 * EXIT_OK (status 33).
 */
#include "include/lib32.inc"
#include "include/lib64.inc"
#include "include/pvh.inc"

#define PTE_P_RW_US     0x7
#define PTE_LARGE       0x80
#define CR4_PAE         (1 << 5)
#define CR0_PG          (1 << 31)
#define MSR_EFER        0xc0000080
#define EFER_LME        (1 << 8)
#define SEL_CODE32      0x08      /* also SYSENTER_CS */
#define SEL_DATA        0x10
#define SEL_CODE64      0x18
#define SEL_UCODE64     0x2b      /* SYSENTER_CS + 32, RPL 3 */
#define SEL_UDATA       0x33      /* SYSENTER_CS + 40, RPL 3 */
#define MSR_SYSENTER_CS 0x174
#define EFLAGS_IOPL3    0x3000
#define SEL_TSS         0x38
#define TSS_LIMIT       (104 + 8192)

    PVH_NOTE _start

    .section .rodata
key_pout: .asciz "pout="
key_pin:  .asciz "pin="
key_mw:   .asciz "mw="
key_mr:   .asciz "mr="
    .section .data
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff      /* 0x08: flat 32-bit code, DPL0 */
    .quad 0x00cf92000000ffff      /* 0x10: flat data, DPL0 */
    .quad 0x00af9a000000ffff      /* 0x18: 64-bit code, DPL0 */
    .quad 0                       /* 0x20: unused (sysexit 32-bit CS) */
    .quad 0x00affa000000ffff      /* 0x28: 64-bit code, DPL3 */
    .quad 0x00cff2000000ffff      /* 0x30: flat data, DPL3 */
gdt_tss:                          /* 0x38: 64-bit TSS, filled in at run time */
    .quad 0
    .quad 0
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

    .section .data
    .balign 4096
pml4:
    .quad pdpt + PTE_P_RW_US
    .fill 511, 8, 0
pdpt:
    .quad pd_low + PTE_P_RW_US
    .quad 0
    .quad 0
    .quad pd_high + PTE_P_RW_US
    .fill 508, 8, 0
pd_low:
    .set addr, 0
    .rept 512
    .quad addr + PTE_P_RW_US + PTE_LARGE
    .set addr, addr + 0x200000
    .endr
pd_high:
    .set addr, 0xc0000000
    .rept 512
    .quad addr + PTE_P_RW_US + PTE_LARGE
    .set addr, addr + 0x200000
    .endr

    .section .bss
    .balign 16
/* 64-bit TSS with an all-zero I/O permission bitmap (SDM vol. 1, 19.5.2): ring 3 may use any
 * port whatever RFLAGS.IOPL says (this host's KVM does not keep IOPL 3 for 64-bit user code). */
tss:
    .skip 104 + 8192
tss_bitmap_end:
    .skip 1
tss_end:
counts:
    .skip 16
    .skip 4096
ustack:

    .code32
    .text
    .globl _start
_start:
    START32
    call pvh_check32
    jne 9f
    call pvh_cmdline32
    mov %esi, %ebx
    test %ebx, %ebx
    jz 2f
    mov $counts, %ebp
    mov $key_pout, %edi
    call getnum
    add $4, %ebp
    mov $key_pin, %edi
    call getnum
    add $4, %ebp
    mov $key_mw, %edi
    call getnum
    add $4, %ebp
    mov $key_mr, %edi
    call getnum
2:  movw $104, tss+102          /* I/O map base */
    movb $0xff, tss_bitmap_end
    mov $tss, %eax
    mov %eax, %edx
    shl $16, %eax
    or $TSS_LIMIT, %eax           /* limit < 64 KiB: bits 15:0 only */
    mov %eax, gdt_tss
    mov %edx, %eax
    shr $16, %eax
    and $0xff, %eax
    or $0x8900, %eax              /* present, type 9 (available 64-bit TSS) */
    mov %edx, %ecx
    and $0xff000000, %ecx
    or %ecx, %eax
    mov %eax, gdt_tss+4
    lgdt gdt_desc
    ljmp $SEL_CODE32, $3f
3:  mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $CR0_PG, %eax
    mov %eax, %cr0
    ljmp $SEL_CODE64, $kernel64
9:  mov $EXIT_FAIL, %al
    call exit32

getnum:
    mov %ebx, %esi
    mov $CMDLINE_MAX, %ecx
    call find32
    jne 1f
    call parsedec32
    jc 1f
    mov %eax, (%ebp)
1:  ret

    .code64
kernel64:
    mov $SEL_TSS, %ax
    ltr %ax
    mov $MSR_SYSENTER_CS, %ecx
    mov $SEL_CODE32, %eax
    xor %edx, %edx
    wrmsr
    pushfq
    orq $EFLAGS_IOPL3, (%rsp)
    popfq
    lea ustack(%rip), %rcx
    lea user64(%rip), %rdx
    sysexitq

/* Ring 3, 64-bit, paged. */
user64:
    mov $SEL_UDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    PUTS64 "exits: cpus 1\n"
    mov $TESTDEV_IOPORT, %dx
    mov $TESTDEV_IOMEM, %edi
    PUTS64 "P1\n"
    mov counts(%rip), %ecx
    test %ecx, %ecx
    jz 2f
1:  out %al, %dx
    dec %ecx
    jnz 1b
2:  PUTS64 "P2\n"
    mov counts+4(%rip), %ecx
    test %ecx, %ecx
    jz 2f
1:  in %dx, %al
    dec %ecx
    jnz 1b
2:  PUTS64 "P3\n"
    mov counts+8(%rip), %ecx
    test %ecx, %ecx
    jz 2f
1:  movl %eax, (%rdi)
    dec %ecx
    jnz 1b
2:  PUTS64 "P4\n"
    mov counts+12(%rip), %ecx
    test %ecx, %ecx
    jz 2f
1:  movl (%rdi), %eax
    dec %ecx
    jnz 1b
2:  PUTS64 "end\n"
    mov $EXIT_OK, %al
    call exit64
