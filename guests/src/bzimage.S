/*
 * bzimage.S: a fake Linux bzImage for the 64-bit boot protocol
 * (Documentation/arch/x86/boot.rst).
 *
 * Layout: a 512-byte boot sector holding the start of the setup header at
 * 0x1f1, one more setup sector (setup_sects = 1) holding the rest of the
 * header and a real-mode stub, then the protected-mode part, which loaders
 * put at code32_start (1 MiB). Its offset 0x200 is the 64-bit entry point:
 * %rsi = struct boot_params, long mode, identity paging.
 *
 * The 64-bit entry prints "bzimage ok" and the zero page contents (see
 * bootparams64.inc) and exits with EXIT_OK (status 33). Loaders that start
 * the real-mode setup code instead (QEMU's linuxboot option ROM) get
 * "bzimage: real-mode entry is not supported" and EXIT_UNEXPECTED (37);
 * the 32-bit entry exits with EXIT_UNEXPECTED too.
 */
#include "include/bootparams64.inc"

#define SETUP_SECTS         1
#define BOOT_PROTOCOL       0x020f
#define LOADFLAGS_LOADED_HIGH 0x01
#define XLF_KERNEL_64       0x0001
#define KERNEL_LOAD_ADDR    0x100000

    .section .bzimage.setup, "awx"
    .code16
    /* Boot sector: only its header fields matter, nothing boots from disk. */
    .org 0x1f1
    .byte SETUP_SECTS                /* 0x1f1 setup_sects */
    .word 0                          /* 0x1f2 root_flags */
    .long bz_syssize                 /* 0x1f4 syssize, 16-byte units */
    .word 0                          /* 0x1f8 ram_size (obsolete) */
    .word 0xffff                     /* 0x1fa vid_mode: normal */
    .word 0                          /* 0x1fc root_dev */
    .word 0xaa55                     /* 0x1fe boot_flag */
    .byte 0xeb, realmode_entry - 1f  /* 0x200 jump over the header */
1:  .ascii "HdrS"                    /* 0x202 header */
    .word BOOT_PROTOCOL              /* 0x206 version 2.15 */
    .long 0                          /* 0x208 realmode_swtch */
    .word 0                          /* 0x20c start_sys_seg (obsolete) */
    .word 0                          /* 0x20e kernel_version: no string */
    .byte 0                          /* 0x210 type_of_loader */
    .byte LOADFLAGS_LOADED_HIGH      /* 0x211 loadflags */
    .word 0                          /* 0x212 setup_move_size */
    .long KERNEL_LOAD_ADDR           /* 0x214 code32_start */
    .long 0                          /* 0x218 ramdisk_image */
    .long 0                          /* 0x21c ramdisk_size */
    .long 0                          /* 0x220 bootsect_kludge */
    .word 0                          /* 0x224 heap_end_ptr */
    .byte 0                          /* 0x226 ext_loader_ver */
    .byte 0                          /* 0x227 ext_loader_type */
    .long 0                          /* 0x228 cmd_line_ptr */
    .long 0x7fffffff                 /* 0x22c initrd_addr_max */
    .long 0x200000                   /* 0x230 kernel_alignment */
    .byte 0                          /* 0x234 relocatable_kernel */
    .byte 21                         /* 0x235 min_alignment: 2 MiB */
    .word XLF_KERNEL_64              /* 0x236 xloadflags */
    .long 2047                       /* 0x238 cmdline_size */
    .long 0                          /* 0x23c hardware_subarch */
    .quad 0                          /* 0x240 hardware_subarch_data */
    .long 0                          /* 0x248 payload_offset */
    .long 0                          /* 0x24c payload_length */
    .quad 0                          /* 0x250 setup_data */
    .quad KERNEL_LOAD_ADDR           /* 0x258 pref_address */
    .long bz_init_size               /* 0x260 init_size */
    .long 0                          /* 0x264 handover_offset */
    .long 0                          /* 0x268 kernel_info_offset */

    /* 16-bit loaders enter here with %ds = the setup segment, i.e. file offset 0. */
realmode_entry:
    cli
    cld
    mov $realmode_msg, %si
    mov $COM1_THR, %dx
2:  lodsb
    test %al, %al
    jz 3f
    out %al, %dx
    jmp 2b
3:  mov $EXIT_UNEXPECTED, %al
    out %al, $DEBUG_EXIT_PORT
4:  hlt
    jmp 4b
realmode_msg:
    .asciz "bzimage: real-mode entry is not supported\n"
    .org (SETUP_SECTS + 1) * 512

    .section .bzimage.pm, "awx"
    .globl pm_start
pm_start:
    /* 32-bit entry (startup_32): not used by this guest, say so and stop. */
    .code32
    mov $EXIT_UNEXPECTED, %al
    out %al, $DEBUG_EXIT_PORT
5:  hlt
    jmp 5b

    .org 0x200
    .code64
    .globl startup_64
startup_64:
    BOOT_PARAMS_REPORT bzimage
