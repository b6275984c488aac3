/*
 * hostile.S: a malicious virtio-mmio driver and fw_cfg DMA user (microvm). Against the first
 * virtio-blk it runs one attack after another, each on a freshly reset and set-up device
 * (guests/src/include/virtio.inc's layout: descriptors at +0, avail ring at +0x1000, used ring at
 * +0x2000 of the queue area), and prints what the device did:
 *   "hostile: NAME: used U, status 0xSS, blk 0xBB"
 * U is the used index after a bounded wait, SS the device status register (0x40 is
 * DEVICE_NEEDS_RESET), BB the request's status byte (0xff: never written). Attacks:
 *   loop       a descriptor chain that loops (0 -> 1 -> 0)
 *   long       a chain through every descriptor and back to the first (longer than the queue)
 *   outside    the request header 16 GiB up (no RAM there)
 *   mmio       the data buffer of a read on the IOAPIC's MMIO page (0xfec00000)
 *   huge       a data buffer of 0xffffffff bytes
 *   wrap       a data buffer at 0xfffffffffffff000, 0x2000 bytes (wraps at 2^64)
 *   ahead      the avail index moved 1000 past the last one (more than the queue holds)
 *   usedavail  the used ring laid over the avail ring
 *   qoutside   the descriptor table 1 TiB up (outside RAM) when the queue goes ready
 *   badnext    a descriptor whose next index is past the queue
 * Then a sane read of sector 0 on the reset device: "hostile: sane read: <text>" (the device
 * still works). Then fw_cfg DMA (ports 0x514/0x518) with a descriptor outside RAM, a read into
 * memory outside RAM, into MMIO and wrapping at 2^64: "hostile: fwcfg NAME: control 0xCCCCCCCC"
 * (the descriptor's control word afterwards: 0 done, bit 0 error). Then "hostile: done" and,
 * with `wait` on the command line, it waits for a byte on COM1 before EXIT_OK; without, it halts
 * for good (the test's QMP then quits it).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/virtio.inc"

#define QAREA       0x200000
#define HDR         0x210000
#define DATA        0x211000
#define FWDESC      0x212000
#define SECTOR      512
#define WAIT_SPINS  200000
#define VS_NEEDS_RESET 0x40
#define FW_CFG_DMA_HIGH 0x514
#define FW_CFG_DMA_LOW  0x518
#define FW_CFG_SIGNATURE 0x0000

    PVH_NOTE _start

    .section .rodata
k_wait:     .asciz "wait"

    .section .bss
    .balign 4
ctx:        .skip VCTX_SIZE
cmdline:    .skip 4
/* Queue addresses hsetup programs (low, high). */
q_desc:     .skip 8
q_avail:    .skip 8
q_used:     .skip 8

    .text
    .code32
/* ATTACK name, routine: reset and set up the device, run the routine (it builds and submits),
 * wait a bounded time, report. */
.macro ATTACK name, fn
    call defaults
    PUTS32 "hostile: \name: "
    movb $0xff, HDR + 16
    call \fn
    call hwait
    call report
.endm

/* FWCFG name, hi, lo, len, addr_hi, addr_lo: a DMA descriptor at FWDESC reading the
 * signature item (select, read) of `len` bytes to addr_hi:addr_lo, then the DMA address
 * register set to hi:lo (the descriptor's own address). */
.macro FWCFG name, hi, lo, len, ahi, alo
    PUTS32 "hostile: fwcfg \name: control 0x"
    mov $((FW_CFG_SIGNATURE << 16) | 0x08 | 0x02), %eax
    bswap %eax
    mov %eax, FWDESC
    mov $\len, %eax
    bswap %eax
    mov %eax, FWDESC + 4
    mov $\ahi, %eax
    bswap %eax
    mov %eax, FWDESC + 8
    mov $\alo, %eax
    bswap %eax
    mov %eax, FWDESC + 12
    mov $\hi, %eax
    bswap %eax
    mov $FW_CFG_DMA_HIGH, %dx
    out %eax, %dx
    mov $\lo, %eax
    bswap %eax
    mov $FW_CFG_DMA_LOW, %dx
    out %eax, %dx
    mov FWDESC, %eax
    bswap %eax
    call puthex8_32
    call newline32
.endm

    .globl _start
_start:
    START32
    call pvh_cmdline32
    mov %esi, cmdline
    mov $VIRTIO_ID_BLOCK, %eax
    call virtio_find32
    jz 1f
    PUTS32 "hostile: FAIL no virtio-blk\n"
    mov $EXIT_FAIL, %al
    call exit32
1:  mov %esi, ctx + VCTX_BASE
    movl $QAREA, ctx + VCTX_QAREA
    movl $SECTOR, vblk_len
    PUTS32 "hostile: start\n"

    ATTACK loop, a_loop
    ATTACK long, a_long
    ATTACK outside, a_outside
    ATTACK mmio, a_mmio
    ATTACK huge, a_huge
    ATTACK wrap, a_wrap
    ATTACK ahead, a_ahead
    ATTACK usedavail, a_usedavail
    ATTACK qoutside, a_qoutside
    ATTACK badnext, a_badnext

    /* The device still serves a well-formed request after a reset. */
    call defaults
    call hsetup
    mov $ctx, %ebx
    mov $VIRTIO_BLK_T_IN, %eax
    xor %edx, %edx
    xor %ecx, %ecx
    mov $HDR, %edi
    mov $DATA, %esi
    movb $0, DATA
    call virtio_blk_req32
    xor %eax, %eax
    call virtio_submit32
    call hwait
    PUTS32 "hostile: sane read: "
    cmpb $0, HDR + 16
    jne 2f
    mov $DATA, %esi
    mov $60, %ecx
    call putsn32
    jmp 3f
2:  PUTS32 "FAIL"
3:  call newline32

    FWCFG outside_desc, 0x4, 0x00000000, 0, 0, 0
    FWCFG outside_ram, 0, FWDESC, 0x10, 0x4, 0x00000000
    FWCFG mmio, 0, FWDESC, 0x10, 0, 0xfec00000
    FWCFG wrap, 0, FWDESC, 0x2000, 0xffffffff, 0xfffff000

    PUTS32 "hostile: done\n"
    mov $k_wait, %edi
    call has_key
    jne hang32
    mov $(COM1_THR + 5), %dx
4:  in %dx, %al
    test $1, %al
    jz 4b
    mov $EXIT_OK, %al
    call exit32

/* has_key: ZF=1 iff the command line contains the string at %edi. */
has_key:
    push %esi
    mov cmdline, %esi
    test %esi, %esi
    jz 1f
    push %ecx
    mov $CMDLINE_MAX, %ecx
    call find32
    pop %ecx
    pop %esi
    ret
1:  cmp $1, %esi             /* %esi is 0: ZF=0 */
    pop %esi
    ret

/* defaults: the queue addresses of virtio.inc's layout. */
defaults:
    movl $QAREA, q_desc
    movl $0, q_desc + 4
    movl $(QAREA + VQ_AVAIL), q_avail
    movl $0, q_avail + 4
    movl $(QAREA + VQ_USED), q_used
    movl $0, q_used + 4
    ret

/* hsetup: virtio_setup32 with the queue addresses from q_desc/q_avail/q_used, and no check of
 * the outcome (the report shows the status). */
hsetup:
    push %eax
    push %esi
    push %edi
    mov ctx + VCTX_BASE, %esi
    movl $0, VM_STATUS(%esi)
    movl $VS_ACKNOWLEDGE, VM_STATUS(%esi)
    movl $(VS_ACKNOWLEDGE | VS_DRIVER), VM_STATUS(%esi)
    movl $0, VM_DRIVER_FEATURES_SEL(%esi)
    movl $0, VM_DRIVER_FEATURES(%esi)
    movl $1, VM_DRIVER_FEATURES_SEL(%esi)
    movl $1, VM_DRIVER_FEATURES(%esi)
    movl $(VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK), VM_STATUS(%esi)
    movl $0, VM_QUEUE_SEL(%esi)
    mov VM_QUEUE_NUM_MAX(%esi), %eax
    cmp $VQ_MAX_SIZE, %eax
    jbe 1f
    mov $VQ_MAX_SIZE, %eax
1:  mov %eax, ctx + VCTX_QSIZE
    mov %eax, VM_QUEUE_NUM(%esi)
    movl $0, ctx + VCTX_AVAIL
    movl $0, ctx + VCTX_USED
    movl $0, QAREA + VQ_AVAIL
    movl $0, QAREA + VQ_USED
    mov q_desc, %eax
    mov %eax, VM_QUEUE_DESC_LO(%esi)
    mov q_desc + 4, %eax
    mov %eax, VM_QUEUE_DESC_HI(%esi)
    mov q_avail, %eax
    mov %eax, VM_QUEUE_DRIVER_LO(%esi)
    mov q_avail + 4, %eax
    mov %eax, VM_QUEUE_DRIVER_HI(%esi)
    mov q_used, %eax
    mov %eax, VM_QUEUE_DEVICE_LO(%esi)
    mov q_used + 4, %eax
    mov %eax, VM_QUEUE_DEVICE_HI(%esi)
    movl $1, VM_QUEUE_READY(%esi)
    movl $(VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK), VM_STATUS(%esi)
    pop %edi
    pop %esi
    pop %eax
    ret

/* desc64: descriptor %ecx = {addr %edi:%eax, len %edx, flags | next << 16 in %esi}. */
desc64:
    push %ecx
    shl $4, %ecx
    add $QAREA, %ecx
    mov %eax, (%ecx)
    mov %edi, 4(%ecx)
    mov %edx, 8(%ecx)
    mov %esi, 12(%ecx)
    pop %ecx
    ret

/* hwait: spin until the used index moves or the device wants a reset, at most WAIT_SPINS. */
hwait:
    push %ecx
    push %esi
    mov ctx + VCTX_BASE, %esi
    mov $WAIT_SPINS, %ecx
1:  cmpw $0, QAREA + VQ_USED + 2
    jne 2f
    testl $VS_NEEDS_RESET, VM_STATUS(%esi)
    jnz 2f
    dec %ecx
    jnz 1b
2:  pop %esi
    pop %ecx
    ret

/* report: "used U, status 0xSS, blk 0xBB". */
report:
    push %eax
    push %esi
    PUTS32 "used "
    movzwl QAREA + VQ_USED + 2, %eax
    call putdec32
    PUTS32 ", status 0x"
    mov ctx + VCTX_BASE, %esi
    mov VM_STATUS(%esi), %eax
    call puthex8_32
    PUTS32 ", blk 0x"
    movzbl HDR + 16, %eax
    call puthex8_32
    call newline32
    pop %esi
    pop %eax
    ret

/* The attacks: each sets up the device (hsetup) itself, then builds and submits. */
a_loop:
    call hsetup
    mov $HDR, %eax
    xor %edi, %edi
    mov $16, %edx
    mov $((1 << 16) | VRING_DESC_F_NEXT), %esi
    xor %ecx, %ecx
    call desc64
    mov $DATA, %eax
    mov $SECTOR, %edx
    mov $((0 << 16) | VRING_DESC_F_NEXT | VRING_DESC_F_WRITE), %esi
    mov $1, %ecx
    call desc64
    mov $ctx, %ebx
    xor %eax, %eax
    call virtio_submit32
    ret

a_long:
    call hsetup
    /* Every descriptor points at the next, the last back at the first. */
    xor %ecx, %ecx
1:  mov $HDR, %eax
    xor %edi, %edi
    mov $16, %edx
    lea 1(%ecx), %esi
    cmp ctx + VCTX_QSIZE, %esi
    jb 2f
    xor %esi, %esi
2:  shl $16, %esi
    or $VRING_DESC_F_NEXT, %esi
    call desc64
    inc %ecx
    cmp ctx + VCTX_QSIZE, %ecx
    jb 1b
    mov $ctx, %ebx
    xor %eax, %eax
    call virtio_submit32
    ret

/* A read request with the header at %edi:%eax and data at DATA; status at HDR + 16. */
req_hdr_at:
    push %ecx
    push %edx
    push %esi
    mov $16, %edx
    mov $((1 << 16) | VRING_DESC_F_NEXT), %esi
    xor %ecx, %ecx
    call desc64
    mov $DATA, %eax
    xor %edi, %edi
    mov $SECTOR, %edx
    mov $((2 << 16) | VRING_DESC_F_NEXT | VRING_DESC_F_WRITE), %esi
    inc %ecx
    call desc64
    mov $(HDR + 16), %eax
    mov $1, %edx
    mov $VRING_DESC_F_WRITE, %esi
    inc %ecx
    call desc64
    mov $ctx, %ebx
    xor %eax, %eax
    call virtio_submit32
    pop %esi
    pop %edx
    pop %ecx
    ret

/* A read of sector 0 with the data buffer at %edi:%eax, %edx bytes. */
req_data_at:
    push %ecx
    push %esi
    push %eax
    push %edi
    push %edx
    movl $VIRTIO_BLK_T_IN, HDR
    movl $0, HDR + 4
    movl $0, HDR + 8
    movl $0, HDR + 12
    mov $HDR, %eax
    xor %edi, %edi
    mov $16, %edx
    mov $((1 << 16) | VRING_DESC_F_NEXT), %esi
    xor %ecx, %ecx
    call desc64
    pop %edx
    pop %edi
    pop %eax
    mov $((2 << 16) | VRING_DESC_F_NEXT | VRING_DESC_F_WRITE), %esi
    inc %ecx
    call desc64
    mov $(HDR + 16), %eax
    xor %edi, %edi
    mov $1, %edx
    mov $VRING_DESC_F_WRITE, %esi
    inc %ecx
    call desc64
    mov $ctx, %ebx
    xor %eax, %eax
    call virtio_submit32
    pop %esi
    pop %ecx
    ret

a_outside:
    call hsetup
    xor %eax, %eax
    mov $4, %edi                        /* 16 GiB */
    call req_hdr_at
    ret

a_mmio:
    call hsetup
    mov $0xfec00000, %eax
    xor %edi, %edi
    mov $SECTOR, %edx
    call req_data_at
    ret

a_huge:
    call hsetup
    mov $DATA, %eax
    xor %edi, %edi
    mov $0xffffffff, %edx
    call req_data_at
    ret

a_wrap:
    call hsetup
    mov $0xfffff000, %eax
    mov $0xffffffff, %edi
    mov $0x2000, %edx
    call req_data_at
    ret

a_ahead:
    call hsetup
    mov $DATA, %eax
    xor %edi, %edi
    mov $SECTOR, %edx
    call req_data_at
    /* The avail index jumps 1000 past what was made available, then a notify. */
    movw $1001, QAREA + VQ_AVAIL + 2
    mov ctx + VCTX_BASE, %esi
    movl $0, VM_QUEUE_NOTIFY(%esi)
    /* The device may serve the real chain first (its notify came before the jump): hwait
     * would return on that used entry before the device has seen the jump, so wait for the
     * reset request itself here (the test requires one), with a bound ten times hwait's. */
    mov $(WAIT_SPINS * 10), %ecx
1:  testl $VS_NEEDS_RESET, VM_STATUS(%esi)
    jnz 2f
    dec %ecx
    jnz 1b
2:  ret

a_usedavail:
    movl $(QAREA + VQ_AVAIL), q_used
    call hsetup
    mov $DATA, %eax
    xor %edi, %edi
    mov $SECTOR, %edx
    call req_data_at
    ret

a_qoutside:
    movl $0x100, q_desc + 4             /* 1 TiB */
    call hsetup
    mov $DATA, %eax
    xor %edi, %edi
    mov $SECTOR, %edx
    call req_data_at
    ret

a_badnext:
    call hsetup
    mov $HDR, %eax
    xor %edi, %edi
    mov $16, %edx
    mov $((0xfff0 << 16) | VRING_DESC_F_NEXT), %esi
    xor %ecx, %ecx
    call desc64
    mov $ctx, %ebx
    xor %eax, %eax
    call virtio_submit32
    ret
