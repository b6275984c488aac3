/*
 * pvh.S: PVH boot protocol check, built twice: pvh32.elf (ELF32) and
 * pvh64.elf (ELF64). Both are entered in 32-bit protected mode with paging
 * off and %ebx = struct hvm_start_info.
 *
 * Prints "pvh ok (elf32|elf64)", the command line, the memory map entry
 * count, the module count and, for each of the first modules, its size and
 * first bytes; then exits through isa-debug-exit with EXIT_OK (status 33),
 * or EXIT_FAIL (status 35) if the start_info magic is wrong.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define MAX_MODULES_SHOWN 4
#define MODULE_BYTES_SHOWN 8

    PVH_NOTE _start

    .code32
    .text
    .globl _start
_start:
    START32
    call pvh_check32
    je 1f
    PUTS32 "pvh: bad hvm_start_info magic "
    mov (%ebx), %eax
    call puthex32
    call newline32
    mov $EXIT_FAIL, %al
    call exit32

#ifdef __x86_64__
1:  PUTS32 "pvh ok (elf64)\n"
#else
1:  PUTS32 "pvh ok (elf32)\n"
#endif
    call pvh_print_cmdline32

    PUTS32 "memmap entries: "
    mov HVM_SI_MEMMAP_ENTRIES(%ebx), %eax
    call putdec32
    call newline32

    PUTS32 "modules: "
    mov HVM_SI_NR_MODULES(%ebx), %edi
    mov %edi, %eax
    call putdec32
    call newline32

    /* Module list entries are 32 bytes; only lists below 4 GiB are reachable. */
    cmpl $0, HVM_SI_MODLIST_PADDR+4(%ebx)
    jne 9f
    mov HVM_SI_MODLIST_PADDR(%ebx), %ebx
    cmp $MAX_MODULES_SHOWN, %edi
    jbe 2f
    mov $MAX_MODULES_SHOWN, %edi
2:  xor %edx, %edx           /* module index */
3:  cmp %edi, %edx
    jae 9f
    PUTS32 "module "
    mov %edx, %eax
    call putdec32
    PUTS32 ": size "
    mov HVM_MOD_SIZE(%ebx), %eax
    call putdec32
    cmpl $0, HVM_MOD_PADDR+4(%ebx)
    jne 5f
    PUTS32 " bytes "
    mov HVM_MOD_SIZE(%ebx), %ecx
    cmpl $0, HVM_MOD_SIZE+4(%ebx)
    jne 4f
    cmp $MODULE_BYTES_SHOWN, %ecx
    jbe 6f
4:  mov $MODULE_BYTES_SHOWN, %ecx
6:  mov HVM_MOD_PADDR(%ebx), %esi
    call putbytes32
5:  call newline32
    add $32, %ebx
    inc %edx
    jmp 3b

9:  mov $EXIT_OK, %al
    call exit32
