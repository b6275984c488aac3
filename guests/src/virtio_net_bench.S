/*
 * virtio_net_bench.S: UDP round trips through a virtio-net device on user networking
 * (benches/virtio_net.py). Ring 0 sets up the first virtio-net device (VERSION_1 only: no
 * offloads, no mergeable buffers; RX queue 0 and TX queue 1, interrupts suppressed), posts 64
 * RX buffers of 2 KiB and builds one UDP datagram from 10.0.2.15:40000 to 10.0.2.2:`port`
 * (Ethernet destination 52:55:0a:00:02:02, the user network's gateway MAC in QEMU's slirp and
 * in rvmm's passt) with `size` payload bytes; it first sends an ARP request for 10.0.2.2 so the
 * stack learns the guest's MAC. Then it drops to ring 3 with sysexit, where the loop runs
 * natively: keep `w` datagrams in flight, poll the RX used ring for the echoes (IPv4/UDP frames;
 * others are reposted and ignored), repost each buffer, until `n` echoes arrived. A datagram
 * lost for ~2^31 TSC cycles is counted lost and its window slot reused.
 * Command line: "n=N size=BYTES w=W port=P" (defaults n=0 size=64 w=16 port=7).
 * Built twice: virtio_net_bench.elf (virtio-mmio) and virtio_net_bench_pci.elf (VIRTIO_PCI: the
 * first virtio-net-pci function, modern or transitional, through its modern interface in BAR4;
 * queue q notifies at BAR4 + 0x3000 + 4 q).
 * Prints "virtio_net_bench: n=N size=S w=W" before the loop and "virtio_net_bench: received R
 * lost L" after it; exits EXIT_OK (status 33), EXIT_FAIL without a usable device.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#ifdef VIRTIO_PCI
#include "include/pci.inc"
#endif
#include "include/virtio.inc"

#define VIRTIO_ID_NET    1
#define RXQ              0x200000     /* queue areas, VQ_AREA_SIZE each */
#define TXQ              0x204000
#define RXBUF            0x300000     /* 64 x 2 KiB */
#define RX_BUFS          64
#define RX_BUF_SIZE      2048
#define TXBUF            0x280000     /* header + the datagram frame */
#define ARPBUF           0x290000
#define HDR_LEN          12
#define MAX_SIZE         1472
#define MAX_W            32
#define CTX_QINDEX       20           /* the queue number to notify (in the VCTX_* context) */
#define MSR_SYSENTER_CS  0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define KERNEL_CS        0x08
#define USER_DS          0x23

    PVH_NOTE _start

    .section .rodata
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00cffa000000ffff
    .quad 0x00cff2000000ffff
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt
k_n:    .asciz "n="
k_size: .asciz "size="
k_w:    .asciz "w="
k_port: .asciz "port="
/* Ethernet: gateway MAC, guest MAC (rvmm's and QEMU's default 52:54:00:12:34:56). */
eth_hdr:
    .byte 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00
arp_frame:
    .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06
    .byte 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01
    .byte 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 10, 0, 2, 15
    .byte 0, 0, 0, 0, 0, 0, 10, 0, 2, 2
arp_frame_end:

    .section .bss
    .balign 16
    .skip 4096
ring0_stack:
    .skip 4096
ring3_stack:
rx:         .skip VCTX_SIZE
tx:         .skip VCTX_SIZE
n_total:    .skip 4
size:       .skip 4
window:     .skip 4
port:       .skip 4
frame_len:  .skip 4
received:   .skip 4
lost:       .skip 4
cmdline:    .skip 4

    .text
    .code32
key_value:
    push %esi
    push %ecx
    push %eax
    mov cmdline, %esi
    test %esi, %esi
    jz 1f
    mov $CMDLINE_MAX, %ecx
    call find32
    jne 1f
    call parsedec32
    jc 1f
    add $4, %esp
    jmp 2f
1:  pop %eax
2:  pop %ecx
    pop %esi
    ret

fail:
    PUTS32 "virtio_net_bench: FAIL "
    call puts32
    call newline32
    mov $EXIT_FAIL, %al
    call exit32

/* setup_queue: queue %ecx of the device at %esi into context %ebx (VCTX_QAREA set). CF=1 on
 * failure. */
setup_queue:
    push %eax
    push %edi
#ifdef VIRTIO_PCI
    mov %cx, VP_Q_SELECT(%esi)
    mov %ecx, CTX_QINDEX(%ebx)
    mov %esi, VCTX_BASE(%ebx)
    movzwl VP_Q_SIZE(%esi), %eax
#else
    mov %ecx, VM_QUEUE_SEL(%esi)
    mov %ecx, CTX_QINDEX(%ebx)
    mov %esi, VCTX_BASE(%ebx)
    mov VM_QUEUE_NUM_MAX(%esi), %eax
#endif
    test %eax, %eax
    jz 9f
    cmp $VQ_MAX_SIZE, %eax
    jbe 1f
    mov $VQ_MAX_SIZE, %eax
1:  mov %eax, VCTX_QSIZE(%ebx)
#ifdef VIRTIO_PCI
    mov %ax, VP_Q_SIZE(%esi)
#else
    mov %eax, VM_QUEUE_NUM(%esi)
#endif
    movl $0, VCTX_AVAIL(%ebx)
    movl $0, VCTX_USED(%ebx)
    mov VCTX_QAREA(%ebx), %edi
    movl $VRING_AVAIL_F_NO_INTERRUPT, VQ_AVAIL(%edi)    /* flags, idx 0 */
    movl $0, VQ_USED(%edi)
#ifdef VIRTIO_PCI
    mov %edi, VP_Q_DESC(%esi)
    movl $0, VP_Q_DESC+4(%esi)
    lea VQ_AVAIL(%edi), %eax
    mov %eax, VP_Q_DRIVER(%esi)
    movl $0, VP_Q_DRIVER+4(%esi)
    lea VQ_USED(%edi), %eax
    mov %eax, VP_Q_DEVICE(%esi)
    movl $0, VP_Q_DEVICE+4(%esi)
    movw $1, VP_Q_ENABLE(%esi)
#else
    mov %edi, VM_QUEUE_DESC_LO(%esi)
    movl $0, VM_QUEUE_DESC_HI(%esi)
    lea VQ_AVAIL(%edi), %eax
    mov %eax, VM_QUEUE_DRIVER_LO(%esi)
    movl $0, VM_QUEUE_DRIVER_HI(%esi)
    lea VQ_USED(%edi), %eax
    mov %eax, VM_QUEUE_DEVICE_LO(%esi)
    movl $0, VM_QUEUE_DEVICE_HI(%esi)
    movl $1, VM_QUEUE_READY(%esi)
#endif
    clc
    jmp 2f
9:  stc
2:  pop %edi
    pop %eax
    ret

/* submit: make descriptor chain %eax of context %ebx available; notify its queue unless the
 * device set VRING_USED_F_NO_NOTIFY. Ring 3 safe. */
submit:
    push %ecx
    push %edx
    push %edi
    mov VCTX_QAREA(%ebx), %edi
    mov VCTX_AVAIL(%ebx), %ecx
    mov VCTX_QSIZE(%ebx), %edx
    dec %edx
    and %ecx, %edx
    mov %ax, VQ_AVAIL+4(%edi,%edx,2)
    inc %ecx
    mov %ecx, VCTX_AVAIL(%ebx)
    mov %cx, VQ_AVAIL+2(%edi)
    mfence
    testw $VRING_USED_F_NO_NOTIFY, VQ_USED(%edi)
    jnz 1f
    mov CTX_QINDEX(%ebx), %edx
    mov VCTX_BASE(%ebx), %edi
#ifdef VIRTIO_PCI
    mov %dx, VM_QUEUE_NOTIFY(%edi,%edx,4)    /* notify_off = queue index, multiplier 4 */
#else
    mov %edx, VM_QUEUE_NOTIFY(%edi)
#endif
1:  pop %edi
    pop %edx
    pop %ecx
    ret

/* try_poll: the next used element of context %ebx if any: ZF=0 and %eax = ID, %edx = length;
 * ZF=1 if none. */
try_poll:
    push %ecx
    push %edi
    mov VCTX_QAREA(%ebx), %edi
    mov VCTX_USED(%ebx), %ecx
    movzwl VQ_USED+2(%edi), %eax
    cmp %cx, %ax
    je 1f
    mov VCTX_QSIZE(%ebx), %edx
    dec %edx
    and %ecx, %edx
    mov VQ_USED+4(%edi,%edx,8), %eax
    mov VQ_USED+8(%edi,%edx,8), %edx
    inc %ecx
    mov %ecx, VCTX_USED(%ebx)
    or $1, %ecx                      /* ZF=0 */
1:  pop %edi
    pop %ecx
    ret

/* ip_checksum: the IPv4 header checksum of the 20 bytes at %esi into its checksum field. */
ip_checksum:
    push %eax
    push %ecx
    push %edx
    movw $0, 10(%esi)
    xor %edx, %edx
    xor %ecx, %ecx
1:  movzwl (%esi,%ecx,2), %eax
    xchg %al, %ah
    add %eax, %edx
    inc %ecx
    cmp $10, %ecx
    jb 1b
2:  mov %edx, %eax
    shr $16, %eax
    and $0xffff, %edx
    add %eax, %edx
    cmp $0xffff, %edx
    ja 2b
    not %edx
    xchg %dl, %dh
    mov %dx, 10(%esi)
    pop %edx
    pop %ecx
    pop %eax
    ret

/* Ring 3: %esi = sent, %ebp = last progress TSC (low 32 bits). */
user_loop:
    mov $USER_DS, %ax
    mov %ax, %ds
    mov %ax, %es
    xor %esi, %esi
    rdtsc
    mov %eax, %ebp
1:  mov received, %eax
    add lost, %eax
    cmp n_total, %eax
    jae 9f
    /* Fill the window: descriptors 0..w-1 of TX all point at the one frame. */
2:  mov %esi, %eax
    sub received, %eax
    sub lost, %eax
    cmp window, %eax
    jae 3f
    cmp n_total, %esi
    jae 3f
    mov %esi, %eax
    xor %edx, %edx
    divl window
    mov %edx, %eax
    mov $tx, %ebx
    call submit
    inc %esi
    jmp 2b
    /* Reclaim TX buffers. */
3:  mov $tx, %ebx
4:  call try_poll
    jnz 4b
    /* Echoes. */
    mov $rx, %ebx
    call try_poll
    jz 6f
    mov %eax, %ecx                      /* buffer ID */
    shl $11, %eax
    add $RXBUF, %eax
    cmpw $0x0008, HDR_LEN+12(%eax)      /* EtherType IPv4 */
    jne 5f
    cmpb $17, HDR_LEN+14+9(%eax)        /* UDP */
    jne 5f
    incl received
    rdtsc
    mov %eax, %ebp
5:  mov %ecx, %eax
    call submit                         /* repost the RX buffer */
    jmp 1b
6:  rdtsc
    sub %ebp, %eax
    cmp $0x80000000, %eax
    jb 1b
    /* Nothing for ~2^31 cycles: what is in flight is lost. */
    mov %esi, %eax
    sub received, %eax
    sub lost, %eax
    add %eax, lost
    rdtsc
    mov %eax, %ebp
    jmp 1b
9:  sysenter

back_in_ring0:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    PUTS32 "virtio_net_bench: received "
    mov received, %eax
    call putdec32
    PUTS32 " lost "
    mov lost, %eax
    call putdec32
    call newline32
    mov $EXIT_OK, %al
    call exit32

    .globl _start
_start:
    START32
    lgdt gdt_desc
    ljmp $KERNEL_CS, $1f
1:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $ring0_stack, %esp
    call pvh_check32
    call pvh_cmdline32
    mov %esi, cmdline
    xor %eax, %eax
    mov $k_n, %edi
    call key_value
    mov %eax, n_total
    mov $64, %eax
    mov $k_size, %edi
    call key_value
    mov %eax, size
    mov $16, %eax
    mov $k_w, %edi
    call key_value
    mov %eax, window
    mov $7, %eax
    mov $k_port, %edi
    call key_value
    mov %eax, port
    mov size, %eax
    cmp $MAX_SIZE, %eax
    ja 8f
    mov window, %eax
    test %eax, %eax
    jz 8f
    cmp $MAX_W, %eax
    ja 8f
    /* The device: VERSION_1 only, RX queue 0, TX queue 1. */
    mov $VIRTIO_ID_NET, %eax
    call virtio_find32
    jne 9f
#ifdef VIRTIO_PCI
    movb $0, VP_STATUS(%esi)
    movb $VS_ACKNOWLEDGE, VP_STATUS(%esi)
    movb $(VS_ACKNOWLEDGE | VS_DRIVER), VP_STATUS(%esi)
    movl $1, VP_DFSELECT(%esi)
    testl $1, VP_DF(%esi)
    jz 9f
    movl $0, VP_GFSELECT(%esi)
    movl $0, VP_GF(%esi)
    movl $1, VP_GFSELECT(%esi)
    movl $1, VP_GF(%esi)
    movb $(VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK), VP_STATUS(%esi)
    testb $VS_FEATURES_OK, VP_STATUS(%esi)
    jz 9f
#else
    movl $0, VM_STATUS(%esi)
    movl $VS_ACKNOWLEDGE, VM_STATUS(%esi)
    movl $(VS_ACKNOWLEDGE | VS_DRIVER), VM_STATUS(%esi)
    movl $1, VM_DEVICE_FEATURES_SEL(%esi)
    testl $1, VM_DEVICE_FEATURES(%esi)
    jz 9f
    movl $0, VM_DRIVER_FEATURES_SEL(%esi)
    movl $0, VM_DRIVER_FEATURES(%esi)
    movl $1, VM_DRIVER_FEATURES_SEL(%esi)
    movl $1, VM_DRIVER_FEATURES(%esi)
    movl $(VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK), VM_STATUS(%esi)
    testl $VS_FEATURES_OK, VM_STATUS(%esi)
    jz 9f
#endif
    mov $rx, %ebx
    movl $RXQ, VCTX_QAREA(%ebx)
    xor %ecx, %ecx
    call setup_queue
    jc 9f
    mov $tx, %ebx
    movl $TXQ, VCTX_QAREA(%ebx)
    mov $1, %ecx
    call setup_queue
    jc 9f
#ifdef VIRTIO_PCI
    movb $(VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK), VP_STATUS(%esi)
    testb $VS_FAILED, VP_STATUS(%esi)
#else
    movl $(VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK), VM_STATUS(%esi)
    testl $VS_FAILED, VM_STATUS(%esi)
#endif
    jnz 9f
    /* RX: 64 writable 2 KiB buffers, descriptor i -> buffer i. */
    mov $rx, %ebx
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $11, %eax
    add $RXBUF, %eax
    mov $RX_BUF_SIZE, %edx
    push %esi
    mov $VRING_DESC_F_WRITE, %esi
    call virtio_desc32
    pop %esi
    mov %ecx, %eax
    call submit
    inc %ecx
    cmp $RX_BUFS, %ecx
    jb 2b
    /* The datagram: header (zero), Ethernet, IPv4, UDP (no checksum), payload. */
    mov $TXBUF, %edi
    xor %eax, %eax
    mov $(HDR_LEN + 14 + 28 + MAX_SIZE), %ecx
    rep stosb
    mov $eth_hdr, %esi
    mov $(TXBUF + HDR_LEN), %edi
    mov $14, %ecx
    rep movsb
    mov $(TXBUF + HDR_LEN + 14), %esi
    movb $0x45, (%esi)
    mov size, %eax
    add $28, %eax
    xchg %al, %ah
    mov %ax, 2(%esi)                     /* total length */
    movw $0x0040, 6(%esi)                /* DF */
    movb $64, 8(%esi)
    movb $17, 9(%esi)
    movl $0x0f02000a, 12(%esi)           /* 10.0.2.15 */
    movl $0x0202000a, 16(%esi)           /* 10.0.2.2 */
    call ip_checksum
    movw $0x409c, 20(%esi)               /* source port 40000 */
    mov port, %eax
    xchg %al, %ah
    mov %ax, 22(%esi)
    mov size, %eax
    add $8, %eax
    xchg %al, %ah
    mov %ax, 24(%esi)
    mov size, %eax
    add $(HDR_LEN + 14 + 28), %eax
    mov %eax, frame_len
    /* TX descriptors 0..w-1: the frame, device-readable. */
    mov $tx, %ebx
    xor %ecx, %ecx
3:  mov $TXBUF, %eax
    mov frame_len, %edx
    push %esi
    xor %esi, %esi
    call virtio_desc32
    pop %esi
    inc %ecx
    cmp window, %ecx
    jb 3b
    /* The ARP request (descriptor w), so the stack learns our MAC; wait for its completion. */
    mov $ARPBUF, %edi
    xor %eax, %eax
    mov $(HDR_LEN + 60), %ecx
    rep stosb
    mov $(ARPBUF + HDR_LEN), %edi
    mov $arp_frame, %esi
    mov $(arp_frame_end - arp_frame), %ecx
    rep movsb
    mov window, %ecx
    mov $ARPBUF, %eax
    mov $(HDR_LEN + 60), %edx
    push %esi
    xor %esi, %esi
    call virtio_desc32
    pop %esi
    mov %ecx, %eax
    call submit
4:  call try_poll
    jz 4b
    PUTS32 "virtio_net_bench: n="
    mov n_total, %eax
    call putdec32
    PUTS32 " size="
    mov size, %eax
    call putdec32
    PUTS32 " w="
    mov window, %eax
    call putdec32
    call newline32
    movl $0, received
    movl $0, lost
    xor %edx, %edx
    mov $MSR_SYSENTER_CS, %ecx
    mov $KERNEL_CS, %eax
    wrmsr
    mov $MSR_SYSENTER_ESP, %ecx
    mov $ring0_stack, %eax
    wrmsr
    mov $MSR_SYSENTER_EIP, %ecx
    mov $back_in_ring0, %eax
    wrmsr
    mov $user_loop, %edx
    mov $ring3_stack, %ecx
    sysexit

8:  mov $.Lbad_args, %esi
    jmp fail
9:  mov $.Lno_net, %esi
    jmp fail

    .section .rodata
.Lbad_args: .asciz "bad size=/w= (size at most 1472, w 1-32)"
.Lno_net:   .asciz "no usable virtio-net device"
