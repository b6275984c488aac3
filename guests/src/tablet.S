/*
 * tablet.S: drives the first virtio-input PCI function (a virtio-tablet-pci) with
 * guests/src/include/virtio.inc and echoes its events on COM1, one line each:
 * "ev TYPE CODE VALUE" in hex (Linux input codes: EV_ABS = 0x3 with ABS_X 0x0 / ABS_Y 0x1,
 * EV_KEY = 0x1 with BTN_LEFT 0x110, EV_SYN = 0x0). Tests move a VNC client's pointer (or send
 * QMP abs events) and read the scaled positions back; the same guest runs on QEMU.
 *
 * It first prints the device's name from the config space (select ID_NAME) and the X axis
 * maximum (select ABS_INFO, subsel ABS_X): "tablet: name 'QEMU Virtio Tablet' xmax 0x7fff",
 * posts 32 eight-byte buffers on the eventq, prints "ready" and polls the used ring, posting
 * each buffer again after printing it. The statusq is left off (a tablet has no LEDs). No
 * interrupts; on a missing device "tablet: FAIL ..." and isa-debug-exit EXIT_FAIL.
 */
#define VIRTIO_PCI
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/pci.inc"
#include "include/virtio.inc"

#define VIRTIO_ID_INPUT 18
#define QAREA           0x200000
#define BUFS            0x210000
#define NBUFS           32
#define DESC_F_WRITE    2
#define CFG_SELECT      (VM_CONFIG + 0)
#define CFG_SUBSEL      (VM_CONFIG + 1)
#define CFG_SIZE        (VM_CONFIG + 2)
#define CFG_DATA        (VM_CONFIG + 8)

    PVH_NOTE _start

    .section .bss
    .balign 4
ctx:        .skip VCTX_SIZE

    .text
    .code32
    .globl _start
_start:
    START32
    PUTS32 "tablet\n"
    mov $VIRTIO_ID_INPUT, %eax
    call virtio_find32
    jz 1f
    PUTS32 "tablet: FAIL no virtio-input function\n"
    jmp fail
1:  mov $ctx, %ebx
    mov %esi, VCTX_BASE(%ebx)
    movl $QAREA, VCTX_QAREA(%ebx)
    call virtio_setup32
    jnc 2f
    PUTS32 "tablet: FAIL setup\n"
    jmp fail
    /* The name: select ID_NAME (1), subsel 0; size bytes of string. */
2:  movb $1, CFG_SELECT(%esi)
    movb $0, CFG_SUBSEL(%esi)
    PUTS32 "tablet: name '"
    movzbl CFG_SIZE(%esi), %ecx
    lea CFG_DATA(%esi), %edi
3:  test %ecx, %ecx
    jz 4f
    movb (%edi), %al
    test %al, %al
    jz 4f
    call putc32
    inc %edi
    dec %ecx
    jmp 3b
    /* ABS_INFO (0x12) of ABS_X (0): min at +0, max at +4. */
4:  PUTS32 "' xmax "
    movb $0x12, CFG_SELECT(%esi)
    movb $0, CFG_SUBSEL(%esi)
    mov CFG_DATA+4(%esi), %eax
    call puthex32
    call newline32
    /* Buffers 0..NBUFS-1, one descriptor each, device-writable. */
    xor %ecx, %ecx
5:  mov %ecx, %eax
    shl $3, %eax
    add $BUFS, %eax
    mov $8, %edx
    mov $DESC_F_WRITE, %esi
    call virtio_desc32
    mov %ecx, %eax
    call virtio_submit32
    inc %ecx
    cmp $NBUFS, %ecx
    jb 5b
    PUTS32 "ready\n"
6:  call virtio_poll32                  /* %eax = descriptor, %edx = bytes written */
    mov %eax, %edi
    shl $3, %edi
    add $BUFS, %edi
    PUTS32 "ev "
    movzwl (%edi), %eax
    call puthex32
    PUTC32 ' '
    movzwl 2(%edi), %eax
    call puthex32
    PUTC32 ' '
    mov 4(%edi), %eax
    call puthex32
    call newline32
    /* The descriptor still describes its buffer: make it available again. */
    sub $BUFS, %edi
    shr $3, %edi
    mov %edi, %eax
    call virtio_submit32
    jmp 6b

fail:
    mov $EXIT_FAIL, %eax
    jmp exit32
