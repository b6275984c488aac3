/*
 * acpi.S: finds the ACPI tables the way an OS without firmware help does and
 * uses them (PVH, ELF32; the start_info RSDP pointer is deliberately ignored).
 *
 * Scans 0xE0000..0xFFFFF on 16-byte boundaries for "RSD PTR " with a valid
 * 20-byte checksum, follows the XSDT (revision >= 2) or the RSDT, and checks
 * every table's checksum: prints "rsdp: rev N xsdt|rsdt", then "table SIG ok"
 * per table (FACP's DSDT included) or "table SIG bad checksum". It then reads
 * SLP_TYPa from the DSDT's \_S5 package and PM1a_CNT_BLK and the reset
 * register from the FADT: "s5: slp_typ N", "pm1a_cnt: 0x...", "reset: port
 * 0x... value 0x...".
 *
 * Command line "poweroff": writes SLP_TYPa << 10 | SLP_EN to PM1a_CNT (the
 * VMM exits 0). "reset": writes the FADT's reset value to its reset register
 * (exit 0 under -no-reboot). Otherwise EXIT_OK; EXIT_FAIL on any failure.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define BIOS_AREA_START 0xe0000
#define BIOS_AREA_END   0x100000
#define FADT_DSDT       40
#define FADT_PM1A_CNT   64
#define FADT_FLAGS      112
#define FADT_RESET_REG  116   /* GAS: space id, width, offset, access size, u64 address */
#define FADT_RESET_VAL  128
#define FADT_X_DSDT     140
#define FADT_RESET_REG_SUP (1 << 10)

    PVH_NOTE _start

    .section .rodata
key_poweroff: .asciz "poweroff"
key_reset:    .asciz "reset"

    .bss
fadt:    .long 0
slp_typ: .long 0

    .code32
    .text
    .globl _start
_start:
    START32
    call pvh_check32

    /* Find the RSDP. */
    mov $BIOS_AREA_START, %esi
1:  cmpl $0x20445352, (%esi)          /* "RSD " */
    jne 2f
    cmpl $0x20525450, 4(%esi)         /* "PTR " */
    jne 2f
    mov $20, %ecx
    call sum8
    test %al, %al
    jz 3f
2:  add $16, %esi
    cmp $BIOS_AREA_END, %esi
    jb 1b
    PUTS32 "rsdp: not found\n"
    jmp fail

3:  PUTS32 "rsdp: rev "
    movzbl 15(%esi), %eax
    call putdec32
    /* XSDT when revision >= 2 and its address is set (below 4 GiB), else RSDT. */
    cmpb $2, 15(%esi)
    jb 4f
    mov 24(%esi), %ebx
    test %ebx, %ebx
    jz 4f
    PUTS32 " xsdt\n"
    mov $8, %edi                       /* entry size */
    jmp 5f
4:  PUTS32 " rsdt\n"
    mov 16(%esi), %ebx
    mov $4, %edi
5:  mov %ebx, %esi
    call check_table
    jne fail
    /* Walk the entries: (length - 36) / entry size. */
    mov 4(%ebx), %ecx
    sub $36, %ecx
    lea 36(%ebx), %edx
    add %edx, %ecx                     /* end of entries */
6:  cmp %ecx, %edx
    jae 8f
    mov (%edx), %esi
    call check_table
    jne fail
    cmpl $0x50434146, (%esi)           /* "FACP" */
    jne 7f
    mov %esi, fadt
7:  add %edi, %edx
    jmp 6b

8:  mov fadt, %ebx
    test %ebx, %ebx
    jnz 9f
    PUTS32 "fadt: not found\n"
    jmp fail
    /* DSDT: X_DSDT if the FADT has it and it is set, else the 32-bit pointer. */
9:  mov FADT_DSDT(%ebx), %esi
    cmpl $FADT_X_DSDT + 8, 4(%ebx)
    jb 10f
    mov FADT_X_DSDT(%ebx), %eax
    test %eax, %eax
    jz 10f
    mov %eax, %esi
10: call check_table
    jne fail

    /* \_S5: NameOp? "_S5_" PackageOp PkgLength NumElements, then the first element. */
    mov 4(%esi), %ecx
    sub $4, %ecx
11: cmpl $0x5f35535f, (%esi)           /* "_S5_" */
    je 12f
    inc %esi
    loop 11b
    PUTS32 "s5: not found\n"
    jmp fail
12: cmpb $0x12, 4(%esi)                /* PackageOp */
    jne 13f
    lea 7(%esi), %esi                  /* past PackageOp, 1-byte PkgLength, NumElements */
    movzbl (%esi), %eax
    cmp $0x0a, %al                     /* BytePrefix */
    jne 14f
    movzbl 1(%esi), %eax
    jmp 15f
14: cmp $1, %al                        /* ZeroOp / OneOp */
    jbe 15f
13: PUTS32 "s5: unexpected encoding\n"
    jmp fail
15: mov %eax, slp_typ
    PUTS32 "s5: slp_typ "
    call putdec32
    call newline32

    PUTS32 "pm1a_cnt: "
    mov FADT_PM1A_CNT(%ebx), %eax
    call puthex32
    call newline32
    testl $FADT_RESET_REG_SUP, FADT_FLAGS(%ebx)
    jz 16f
    PUTS32 "reset: space "
    movzbl FADT_RESET_REG(%ebx), %eax
    call putdec32
    PUTS32 " port "
    mov FADT_RESET_REG+4(%ebx), %eax
    call puthex32
    PUTS32 " value "
    movzbl FADT_RESET_VAL(%ebx), %eax
    call puthex32
    call newline32

16: call pvh_cmdline32
    test %esi, %esi
    jz ok
    mov $CMDLINE_MAX, %ecx
    push %esi
    mov $key_poweroff, %edi
    call find32
    pop %esi
    je do_poweroff
    mov $key_reset, %edi
    call find32
    je do_reset
ok: mov $EXIT_OK, %al
    call exit32

do_poweroff:
    PUTS32 "powering off\n"
    mov slp_typ, %eax
    shl $10, %eax
    or $ACPI_PM1_SLP_EN, %eax
    mov FADT_PM1A_CNT(%ebx), %edx
    out %ax, %dx
    call settle
    PUTS32 "still running after poweroff\n"
    jmp fail

do_reset:
    testl $FADT_RESET_REG_SUP, FADT_FLAGS(%ebx)
    jz fail
    cmpb $1, FADT_RESET_REG(%ebx)      /* SystemIO */
    jne fail
    PUTS32 "resetting\n"
    mov FADT_RESET_REG+4(%ebx), %edx
    movzbl FADT_RESET_VAL(%ebx), %eax
    out %al, %dx
    call settle
    PUTS32 "still running after reset\n"
    jmp fail

fail:
    mov $EXIT_FAIL, %al
    call exit32

/* settle: give a VMM that acts on requests asynchronously (QEMU's main loop) time to
 * stop this vCPU: 20000 port reads, at most a few tenths of a second. */
settle:
    push %eax
    push %ecx
    mov $20000, %ecx
1:  in $0x80, %al
    loop 1b
    pop %ecx
    pop %eax
    ret

/* sum8: %al = byte sum of %ecx bytes at %esi. */
sum8:
    push %ecx
    push %esi
    xor %eax, %eax
1:  add (%esi), %al
    inc %esi
    loop 1b
    pop %esi
    pop %ecx
    ret

/* check_table: print "table SIG ok" or "table SIG bad checksum" for the table at
 * %esi; ZF=1 iff the checksum is right. */
check_table:
    push %eax
    push %ecx
    PUTS32 "table "
    mov $4, %ecx
    call putsn32
    mov 4(%esi), %ecx
    call sum8
    test %al, %al
    jnz 1f
    PUTS32 " ok\n"
    xor %eax, %eax
    jmp 2f
1:  PUTS32 " bad checksum\n"
    or $1, %eax
2:  pop %ecx
    pop %eax
    ret
