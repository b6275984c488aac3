/*
 * default.S: rvmm's built-in default guest (PVH, ELF32).
 *
 * Prints "rvmm default guest: N vCPUs, M MiB RAM" from fw_cfg (after checking
 * the "QEMU" signature), then the PVH command line if there is one, then
 * powers the machine off through ACPI PM1a_CNT (the VMM exits with status 0).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

    PVH_NOTE _start

    .code32
    .text
    .globl _start
_start:
    START32
    mov %ebx, pvh_start_info

    /* fw_cfg signature must read "QEMU" before any other item is trusted. */
    mov $FW_CFG_SIGNATURE, %ax
    call fwcfg_select32
    mov $4, %ecx
    call fwcfg_read32
    cmp $0x554d4551, %eax    /* "QEMU" little endian */
    je 1f
    PUTS32 "rvmm default guest: no fw_cfg (signature "
    call puthex32
    PUTS32 ")\n"
    jmp 4f

1:  mov $FW_CFG_NB_CPUS, %ax
    call fwcfg_select32
    mov $2, %ecx
    call fwcfg_read32
    mov %eax, %edi           /* vCPU count */

    mov $FW_CFG_RAM_SIZE, %ax
    call fwcfg_select32
    mov $4, %ecx
    call fwcfg_read32
    mov %eax, %ebx           /* low 32 bits */
    call fwcfg_read32        /* high 32 bits */
    shrd $20, %eax, %ebx     /* bytes -> MiB (fits 32 bits below 4 PiB) */

    PUTS32 "rvmm default guest: "
    mov %edi, %eax
    call putdec32
    PUTS32 " vCPU"
    cmp $1, %edi
    je 2f
    PUTC32 's'
2:  PUTS32 ", "
    mov %ebx, %eax
    call putdec32
    PUTS32 " MiB RAM\n"

    /* The command line, only when the loader passed a non-empty one. */
4:  mov pvh_start_info, %ebx
    test %ebx, %ebx
    jz 5f
    cmpl $HVM_START_MAGIC, HVM_SI_MAGIC(%ebx)
    jne 5f
    call pvh_cmdline32
    test %esi, %esi
    jz 5f
    cmpb $0, (%esi)
    je 5f
    call pvh_print_cmdline32
5:  call poweroff32
