/*
 * reset.S: reset through the i8042 and count the boots.
 *
 * A counter lives at BOOT_COUNTER_ADDR, outside the image: RAM survives a
 * system reset (QEMU and rvmm reload only the kernel image). Each boot prints
 * "boot N"; while N < 3 the guest resets with 0xFE -> port 0x64, then prints
 * "reset: done" and exits with EXIT_OK (status 33). With -no-reboot the
 * first reset ends the VM instead (status 0).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define BOOT_COUNTER_ADDR   0x00f00000   /* 15 MiB: above the image, below the initrd */
#define BOOT_COUNTER_MAGIC  0x544f4f42   /* "BOOT" */
#define BOOTS_BEFORE_EXIT   3

    PVH_NOTE _start

    .code32
    .text
    .globl _start
_start:
    START32
    mov $BOOT_COUNTER_ADDR, %ebx
    cmpl $BOOT_COUNTER_MAGIC, (%ebx)
    je 1f
    movl $BOOT_COUNTER_MAGIC, (%ebx)     /* first boot: RAM is not ours yet */
    movl $0, 4(%ebx)
1:  incl 4(%ebx)
    mov 4(%ebx), %eax
    PUTS32 "boot "
    call putdec32
    call newline32
    cmp $BOOTS_BEFORE_EXIT, %eax
    jae 2f
    call reset32

2:  movl $0, (%ebx)                      /* the next run starts from boot 1 */
    PUTS32 "reset: done\n"
    mov $EXIT_OK, %al
    call exit32
