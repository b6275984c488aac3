/*
 * balloon.S: drives the first virtio-balloon PCI function (virtio 1.2 §5.5) with
 * guests/src/include/virtio.inc (queue 0, the inflate queue, only; no statistics, no deflate
 * queue: without VIRTIO_BALLOON_F_MUST_TELL_HOST a driver may reuse deflated pages untold).
 *
 * It writes 0xa5 into the first dword of each of the 4096 pages at 16-32 MiB (so they are
 * resident on the host), prints "balloon: touched 4096 pages" and "ready", then polls the
 * config's num_pages until the host sets a target (QMP `balloon`): "balloon: target N", and
 * inflates min(N, 4096) pages from 16 MiB: 16 buffers of 256 PFNs each, then writes `actual`
 * = that count. Each inflated page must then read zero (the host discarded it): "balloon:
 * inflated N pages, all read zero" (or "balloon: FAIL page P kept its data"). Then it waits for
 * num_pages to drop to 0 (the target back at the RAM size), writes `actual` = 0, prints
 * "balloon: deflated", waits for a byte on COM1 and exits EXIT_OK. No interrupts. The same guest runs on QEMU.
 */
#define VIRTIO_PCI
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/pci.inc"
#include "include/virtio.inc"

#define VIRTIO_ID_BALLOON 5
#define QAREA           0x200000
#define PFNS            0x210000        /* 16 buffers of 1 KiB */
#define AREA            0x1000000       /* the pages that go into the balloon */
#define AREA_PAGES      4096
#define CFG_NUM_PAGES   (VM_CONFIG + 0)
#define CFG_ACTUAL      (VM_CONFIG + 4)

    PVH_NOTE _start

    .section .bss
    .balign 4
ctx:        .skip VCTX_SIZE
count:      .skip 4

    .text
    .code32
    .globl _start
_start:
    START32
    PUTS32 "balloon\n"
    mov $VIRTIO_ID_BALLOON, %eax
    call virtio_find32
    jz 1f
    PUTS32 "balloon: FAIL no virtio-balloon function\n"
    jmp fail
1:  mov $ctx, %ebx
    mov %esi, VCTX_BASE(%ebx)
    movl $QAREA, VCTX_QAREA(%ebx)
    call virtio_setup32
    jnc 2f
    PUTS32 "balloon: FAIL setup\n"
    jmp fail
    /* Touch every page of the area. */
2:  mov $AREA, %edi
    mov $AREA_PAGES, %ecx
3:  movl $0xa5a5a5a5, (%edi)
    add $4096, %edi
    loop 3b
    PUTS32 "balloon: touched 4096 pages\nready\n"
    /* Wait for a target. */
4:  mov CFG_NUM_PAGES(%esi), %eax
    test %eax, %eax
    jnz 5f
    pause
    jmp 4b
5:  PUTS32 "balloon: target "
    call putdec32
    call newline32
    cmp $AREA_PAGES, %eax
    jbe 6f
    mov $AREA_PAGES, %eax
6:  mov %eax, count
    /* PFN k at PFNS + 4k: AREA / 4096 + k. */
    xor %ecx, %ecx
7:  lea (AREA >> 12)(%ecx), %eax
    mov %eax, PFNS(,%ecx,4)
    inc %ecx
    cmp $AREA_PAGES, %ecx
    jb 7b
    /* Buffer b: descriptor b, count - 256 b PFNs (at most 256), driver-written. */
    xor %ecx, %ecx
8:  mov %ecx, %edx
    shl $8, %edx                        /* first PFN of this buffer */
    mov count, %eax
    sub %edx, %eax
    jbe 10f
    cmp $256, %eax
    jbe 9f
    mov $256, %eax
9:  shl $2, %eax
    mov %eax, %edx                      /* length */
    mov %ecx, %eax
    shl $10, %eax
    add $PFNS, %eax                     /* address */
    push %esi
    xor %esi, %esi                      /* flags 0: device-readable */
    call virtio_desc32
    pop %esi
    mov %ecx, %eax
    call virtio_submit32
    inc %ecx
    jmp 8b
    /* %ecx buffers submitted: wait for each. */
10: test %ecx, %ecx
    jz 11f
    call virtio_poll32
    dec %ecx
    jmp 10b
11: mov count, %eax
    mov %eax, CFG_ACTUAL(%esi)
    /* Every inflated page reads zero now. */
    mov $AREA, %edi
    mov count, %ecx
12: cmpl $0, (%edi)
    jne 13f
    add $4096, %edi
    loop 12b
    PUTS32 "balloon: inflated "
    mov count, %eax
    call putdec32
    PUTS32 " pages, all read zero\n"
    jmp 14f
13: PUTS32 "balloon: FAIL page at "
    mov %edi, %eax
    call puthex32
    PUTS32 " kept its data\n"
    jmp fail
    /* Wait for the target to go back to 0, then give the pages back. */
14: mov CFG_NUM_PAGES(%esi), %eax
    test %eax, %eax
    jz 15f
    pause
    jmp 14b
15: movl $0, CFG_ACTUAL(%esi)
    PUTS32 "balloon: deflated\n"
    /* Stay until a byte arrives on COM1: the host reads BALLOON_CHANGE first. */
    mov $(COM1_THR + 5), %dx            /* LSR: bit 0 = data ready */
16: in %dx, %al
    test $1, %al
    jz 16b
    mov $EXIT_OK, %eax
    jmp exit32

fail:
    mov $EXIT_FAIL, %eax
    jmp exit32
