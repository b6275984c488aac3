/*
 * multiboot.S: Multiboot 1 check, built twice: multiboot.elf (ELF32, the
 * loader reads the ELF program headers) and, with MULTIBOOT_AOUT defined,
 * multiboot_aout.bin (flat binary; header flag bit 16 gives the load
 * addresses, the "a.out kludge").
 *
 * Checks %eax == 0x2BADB002, then prints mem_lower/mem_upper, the command
 * line, each module's string, size and first bytes, and the memory map entry
 * count. Exits with EXIT_OK (status 33), or EXIT_FAIL (35) on a bad magic.
 */
#include "include/lib32.inc"

#define MB_FLAG_PAGE_ALIGN  (1 << 0)
#define MB_FLAG_MEMINFO     (1 << 1)
#define MB_FLAG_AOUT_KLUDGE (1 << 16)
#ifdef MULTIBOOT_AOUT
#define MB_HEADER_FLAGS (MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMINFO | MB_FLAG_AOUT_KLUDGE)
#else
#define MB_HEADER_FLAGS (MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMINFO)
#endif
#define MAX_MODULES_SHOWN 4
#define MODULE_BYTES_SHOWN 8

    /* Multiboot spec section 3.1.1: 4-byte aligned, within the first 8 KiB. */
    .section .multiboot, "ax"
    .balign 4
multiboot_header:
    .long MULTIBOOT_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MULTIBOOT_HEADER_MAGIC + MB_HEADER_FLAGS)
#ifdef MULTIBOOT_AOUT
    .long multiboot_header           /* header_addr */
    .long _image_start               /* load_addr */
    .long _edata                     /* load_end_addr */
    .long _end                       /* bss_end_addr */
    .long _start                     /* entry_addr */
#endif

    .code32
    .text
    .globl _start
_start:
    START32
    cmp $MULTIBOOT_BOOT_MAGIC, %eax
    je 1f
    PUTS32 "multiboot: bad magic "
    call puthex32
    call newline32
    mov $EXIT_FAIL, %al
    call exit32

#ifdef MULTIBOOT_AOUT
1:  PUTS32 "multiboot ok (a.out kludge)\n"
#else
1:  PUTS32 "multiboot ok (elf)\n"
#endif
    mov MB_INFO_FLAGS(%ebx), %ebp

    test $MB_FLAG_MEM, %ebp
    jz 2f
    PUTS32 "mem_lower: "
    mov MB_INFO_MEM_LOWER(%ebx), %eax
    call putdec32
    PUTS32 " KiB, mem_upper: "
    mov MB_INFO_MEM_UPPER(%ebx), %eax
    call putdec32
    PUTS32 " KiB\n"

2:  PUTS32 "cmdline: "
    test $MB_FLAG_CMDLINE, %ebp
    jz 3f
    mov MB_INFO_CMDLINE(%ebx), %esi
    test %esi, %esi
    jz 3f
    mov $CMDLINE_MAX, %ecx
    call putsn32
3:  call newline32

    test $MB_FLAG_MODS, %ebp
    jz 8f
    PUTS32 "modules: "
    mov MB_INFO_MODS_COUNT(%ebx), %edi
    mov %edi, %eax
    call putdec32
    call newline32
    mov MB_INFO_MODS_ADDR(%ebx), %edx
    cmp $MAX_MODULES_SHOWN, %edi
    jbe 4f
    mov $MAX_MODULES_SHOWN, %edi
4:  xor %eax, %eax           /* module index */
5:  cmp %edi, %eax
    jae 8f
    PUTS32 "module "
    call putdec32
    PUTS32 ": '"
    mov MB_MOD_STRING(%edx), %esi
    test %esi, %esi
    jz 6f
    mov $CMDLINE_MAX, %ecx
    call putsn32
6:  PUTS32 "' size "
    mov MB_MOD_END(%edx), %ecx
    sub MB_MOD_START(%edx), %ecx
    push %eax
    mov %ecx, %eax
    call putdec32
    pop %eax
    PUTS32 " bytes "
    cmp $MODULE_BYTES_SHOWN, %ecx
    jbe 7f
    mov $MODULE_BYTES_SHOWN, %ecx
7:  mov MB_MOD_START(%edx), %esi
    call putbytes32
    call newline32
    add $16, %edx
    inc %eax
    jmp 5b

    /* Each mmap entry starts with its size, which does not count itself. */
8:  test $MB_FLAG_MMAP, %ebp
    jz 9f
    mov MB_INFO_MMAP_ADDR(%ebx), %esi
    mov MB_INFO_MMAP_LENGTH(%ebx), %ecx
    add %esi, %ecx           /* end of the map */
    xor %eax, %eax
10: lea 4(%esi), %edx
    cmp %ecx, %edx
    ja 11f
    add (%esi), %edx
    cmp %ecx, %edx
    ja 11f
    inc %eax
    mov %edx, %esi
    cmp $1024, %eax          /* a corrupt map must not loop for long */
    jb 10b
11: PUTS32 "mmap entries: "
    call putdec32
    call newline32

9:  mov $EXIT_OK, %al
    call exit32
