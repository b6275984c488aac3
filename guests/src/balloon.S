/*
 * balloon.S: drives the first virtio-balloon PCI function (virtio 1.2 §5.5) with
 * guests/src/include/virtio.inc's ring code: the inflate queue (0) and the statistics queue (2,
 * VIRTIO_BALLOON_F_STATS_VQ); no deflate queue (without VIRTIO_BALLOON_F_MUST_TELL_HOST a driver
 * may reuse deflated pages untold). The device is set up here (two queues), not by
 * virtio_setup32, which makes queue 0 alone ready.
 *
 * Statistics: one buffer of two entries, free memory (tag 4) = 0x1234000 + N * 4096 and total
 * memory (tag 5) = 64 MiB, is posted at start-up; whenever the device gives it back (the host's
 * polling interval), N goes up by one, "balloon: stats N" is printed and the buffer is posted
 * again. The host sees N in QMP `qom-get guest-stats`.
 *
 * With `report` on the command line (and VIRTIO_BALLOON_F_REPORTING offered: `-device
 * virtio-balloon-pci,free-page-reporting=on`) it tests free page reporting instead of the
 * balloon: after "ready" it touches the 512 pages at 32-34 MiB, prints "balloon: touched report
 * area", waits for a byte on COM1 (the host measures), reports the 2 MiB as one free range on
 * the reporting queue (3), and prints "balloon: reported 2 MiB, all read zero" once the
 * buffer is used and every page reads zero; then it waits for another byte and exits EXIT_OK.
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
#define SQAREA          0x230000        /* the statistics queue */
#define RQAREA          0x250000        /* the reporting queue */
#define REPORT          0x2000000       /* the range reported free */
#define REPORT_PAGES    512
#define CMDLINE_MAX     256
#define STATS           0x240000        /* its one buffer: 2 x {le16 tag, le64 val} */
#define CFG_NUM_PAGES   (VM_CONFIG + 0)
#define CFG_ACTUAL      (VM_CONFIG + 4)

    PVH_NOTE _start

    .section .bss
    .balign 4
ctx:        .skip VCTX_SIZE
sctx:       .skip VCTX_SIZE
rctx:       .skip VCTX_SIZE
report:     .skip 4         /* 1: test free page reporting */
count:      .skip 4
nstats:     .skip 4

    .text
    .code32
    .globl _start
_start:
    START32
    call pvh_check32
    movl $0, report
    call pvh_cmdline32
    test %esi, %esi
    jz 0f
    mov $k_report, %edi
    mov $CMDLINE_MAX, %ecx
    call find32
    jne 0f
    movl $1, report
0:  PUTS32 "balloon\n"
    mov $VIRTIO_ID_BALLOON, %eax
    call virtio_find32
    jz 1f
    PUTS32 "balloon: FAIL no virtio-balloon function\n"
    jmp fail
1:  mov $ctx, %ebx
    mov %esi, VCTX_BASE(%ebx)
    movl $QAREA, VCTX_QAREA(%ebx)
    mov $sctx, %ebx
    /* Queue 2 notifies at notify + 2 * 4: its context's base is BAR4 + 8 for virtio_submit32. */
    lea 8(%esi), %eax
    mov %eax, VCTX_BASE(%ebx)
    movl $SQAREA, VCTX_QAREA(%ebx)
    mov $rctx, %ebx
    /* Queue 3 notifies at notify + 3 * 4. */
    lea 12(%esi), %eax
    mov %eax, VCTX_BASE(%ebx)
    movl $RQAREA, VCTX_QAREA(%ebx)
    call setup
    jnc 2f
    PUTS32 "balloon: FAIL setup\n"
    jmp fail
    /* Touch every page of the area. */
    /* The statistics buffer: descriptor 0 of the statistics queue. */
2:  movl $0, nstats
    call post_stats
    mov $AREA, %edi
    mov $AREA_PAGES, %ecx
3:  movl $0xa5a5a5a5, (%edi)
    add $4096, %edi
    loop 3b
    PUTS32 "balloon: touched 4096 pages\nready\n"
    cmpl $0, report
    jne do_report
    /* Wait for a target, refreshing the statistics whenever the device asks. */
4:  call poll_stats
    mov $ctx, %ebx
    mov CFG_NUM_PAGES(%esi), %eax
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

/* setup: the device at BAR4 %esi with queue 0 (context ctx) and queue 2 (context sctx), features
 * VERSION_1 and STATS_VQ (§3.1.1). CF=1 on failure. */
setup:
    push %eax
    push %ebx
    movb $0, VP_STATUS(%esi)
    movb $VS_ACKNOWLEDGE, VP_STATUS(%esi)
    movb $(VS_ACKNOWLEDGE | VS_DRIVER), VP_STATUS(%esi)
    movl $0, VP_DFSELECT(%esi)
    testl $2, VP_DF(%esi)                        /* STATS_VQ */
    jz 9f
    movl $1, VP_DFSELECT(%esi)
    testl $1, VP_DF(%esi)                        /* VERSION_1 */
    jz 9f
    movl $0, VP_GFSELECT(%esi)
    movl $2, %eax                                /* STATS_VQ */
    cmpl $0, report
    je 1f
    movl $0, VP_DFSELECT(%esi)
    testl $0x20, VP_DF(%esi)                     /* REPORTING */
    jz 9f
    or $0x20, %eax
1:  mov %eax, VP_GF(%esi)
    movl $1, VP_GFSELECT(%esi)
    movl $1, VP_GF(%esi)
    movb $(VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK), VP_STATUS(%esi)
    testb $VS_FEATURES_OK, VP_STATUS(%esi)
    jz 9f
    mov $ctx, %ebx
    xor %eax, %eax
    call setup_queue
    jc 9f
    mov $sctx, %ebx
    mov $2, %eax
    call setup_queue
    jc 9f
    cmpl $0, report
    je 2f
    mov $rctx, %ebx
    mov $3, %eax
    call setup_queue
    jc 9f
2:
    movb $(VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK), VP_STATUS(%esi)
    testb $VS_FAILED, VP_STATUS(%esi)
    jnz 9f
    clc
    jmp 10f
9:  movb $VS_FAILED, VP_STATUS(%esi)
    stc
10: pop %ebx
    pop %eax
    ret

/* setup_queue: queue %eax of the device at %esi with context %ebx, 16 entries. CF=1 if the
 * device has no such queue. */
setup_queue:
    push %eax
    push %edi
    mov %ax, VP_Q_SELECT(%esi)
    movzwl VP_Q_SIZE(%esi), %eax
    cmp $16, %eax
    jb 9f
    movl $16, VCTX_QSIZE(%ebx)
    movw $16, VP_Q_SIZE(%esi)
    movl $0, VCTX_AVAIL(%ebx)
    movl $0, VCTX_USED(%ebx)
    mov VCTX_QAREA(%ebx), %edi
    movl $0, VQ_AVAIL(%edi)
    movl $0, VQ_USED(%edi)
    mov %edi, VP_Q_DESC(%esi)
    movl $0, VP_Q_DESC+4(%esi)
    lea VQ_AVAIL(%edi), %eax
    mov %eax, VP_Q_DRIVER(%esi)
    movl $0, VP_Q_DRIVER+4(%esi)
    lea VQ_USED(%edi), %eax
    mov %eax, VP_Q_DEVICE(%esi)
    movl $0, VP_Q_DEVICE+4(%esi)
    movw $1, VP_Q_ENABLE(%esi)
    clc
    jmp 10f
9:  stc
10: pop %edi
    pop %eax
    ret

/* post_stats: fill the statistics buffer from nstats and make it available. */
post_stats:
    push %eax
    push %ebx
    push %ecx
    push %edx
    push %esi
    movw $4, STATS                       /* VIRTIO_BALLOON_S_MEMFREE */
    mov nstats, %eax
    shl $12, %eax
    add $0x1234000, %eax
    movl %eax, STATS+2
    movl $0, STATS+6
    movw $5, STATS+10                    /* VIRTIO_BALLOON_S_MEMTOT */
    movl $0x4000000, STATS+12
    movl $0, STATS+16
    mov $sctx, %ebx
    xor %ecx, %ecx
    mov $STATS, %eax
    mov $20, %edx
    xor %esi, %esi                       /* device-readable */
    call virtio_desc32
    xor %eax, %eax
    call virtio_submit32
    pop %esi
    pop %edx
    pop %ecx
    pop %ebx
    pop %eax
    ret

/* poll_stats: if the device gave the statistics buffer back, count it, print and post again. */
poll_stats:
    push %eax
    push %ebx
    push %ecx
    push %edx
    push %edi
    mov $sctx, %ebx
    mov VCTX_QAREA(%ebx), %edi
    movzwl VQ_USED+2(%edi), %eax
    cmp VCTX_USED(%ebx), %ax
    je 1f
    call virtio_poll32
    incl nstats
    PUTS32 "balloon: stats "
    mov nstats, %eax
    call putdec32
    call newline32
    call post_stats
1:  pop %edi
    pop %edx
    pop %ecx
    pop %ebx
    pop %eax
    ret

/* Free page reporting: touch the range, wait, report it, check it reads zero. */
do_report:
    mov $REPORT, %edi
    mov $REPORT_PAGES, %ecx
1:  movl $0x5a5a5a5a, (%edi)
    add $4096, %edi
    loop 1b
    PUTS32 "balloon: touched report area\n"
    call wait_byte
    mov $rctx, %ebx
    xor %ecx, %ecx
    mov $REPORT, %eax
    mov $(REPORT_PAGES * 4096), %edx
    mov $2, %esi                         /* VRING_DESC_F_WRITE: the device "writes" the pages */
    call virtio_desc32
    xor %eax, %eax
    call virtio_submit32
    call virtio_poll32
    mov $REPORT, %edi
    mov $REPORT_PAGES, %ecx
2:  cmpl $0, (%edi)
    jne 3f
    add $4096, %edi
    loop 2b
    PUTS32 "balloon: reported 2 MiB, all read zero\n"
    call wait_byte
    mov $EXIT_OK, %eax
    jmp exit32
3:  PUTS32 "balloon: FAIL reported page at "
    mov %edi, %eax
    call puthex32
    PUTS32 " kept its data\n"
    jmp fail

/* wait_byte: wait for a byte on COM1 and take it. */
wait_byte:
    push %eax
    push %edx
    mov $(COM1_THR + 5), %dx            /* LSR: bit 0 = data ready */
1:  in %dx, %al
    test $1, %al
    jz 1b
    mov $COM1_THR, %dx
    in %dx, %al
    pop %edx
    pop %eax
    ret

    .section .rodata
k_report:   .asciz "report"
    .text

fail:
    mov $EXIT_FAIL, %eax
    jmp exit32
