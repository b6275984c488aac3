/*
 * virtio.S: drives virtio-mmio devices end to end with guests/src/include/virtio.inc. Command line
 * (PVH), all optional:
 *   rng=N       read N (1-64) bytes from the first virtio-rng: "virtio-rng: N bytes: xx ..."
 *   blk         on the first virtio-blk: "virtio-blk: capacity S sectors", read sector 0 and print
 *               it as text ("virtio-blk: sector 0: ..."), write sector 1 filled with 0x5a, flush
 *               (unless `noflush`): "virtio-blk: wrote sector 1, flush status 0"
 *   irqbase=N   complete the first request by interrupt: IOAPIC pin N + transport index (edge;
 *               `level` for level-triggered) to vector 0x30: "virtio: interrupt on vector 0x30,
 *               status 0x1"; the handler does not return (no iret at CPL0), it continues the
 *               program with interrupts off. Every other completion is polled from the used ring.
 *   end=poweroff|reset|hang|xsave   how to stop (default isa-debug-exit EXIT_OK, status 33);
 *               xsave: CR4.OSXSAVE set, then an xsave at CPL0, which this host's KVM cannot
 *               emulate (a fatal guest error for the VMM, as badinsn.elf); where the host runs it
 *               the guest prints "virtio: xsave completed" and exits EXIT_UNEXPECTED
 *   wait        before stopping, wait for a byte on COM1 (the test attaches a tracer first)
 *   blkagain    after the wait, one more request on the same virtio-blk queue (no new setup):
 *               sector 2 filled with 0x5a, then a flush: "virtio-blk: wrote sector 2" (the
 *               snapshot test saves the guest while it waits)
 * Prints "virtio: done" before stopping; any failure prints "virtio: FAIL ..." and exits
 * EXIT_FAIL (status 35).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"
#include "include/virtio.inc"

#define IRQ_VECTOR      0x30
#define RNG_QAREA       0x200000
#define BLK_QAREA       0x210000
#define RNG_BUF         0x220000
#define BLK_HDR         0x221000
#define BLK_DATA        0x222000
#define SECTOR          512
#define WRITE_BYTE      0x5a

    PVH_NOTE _start

    .section .rodata
k_rng:      .asciz "rng="
k_blk:      .asciz "blk"
k_irqbase:  .asciz "irqbase="
k_level:    .asciz "level"
k_noflush:  .asciz "noflush"
k_poweroff: .asciz "end=poweroff"
k_reset:    .asciz "end=reset"
k_hang:     .asciz "end=hang"
k_xsave:    .asciz "end=xsave"
k_blkagain: .asciz "blkagain"
k_wait:     .asciz "wait"

    .section .bss
    .balign 4
rng_ctx:    .skip VCTX_SIZE
blk_ctx:    .skip VCTX_SIZE
irq_pin:    .skip 4          /* IOAPIC pin base, or -1: no interrupt wanted */
irq_done:   .skip 4          /* 1 once the one interrupt was taken */
irq_ctx:    .skip 4          /* context whose completion the interrupt reports */
irq_resume: .skip 4          /* where the handler continues */
cmdline:    .skip 4
    .balign 64
xsave_area: .skip 4096

    .text
    .code32
/* has_key: ZF=1 iff the command line contains the string at %edi; %esi = past it. */
has_key:
    mov cmdline, %esi
    test %esi, %esi
    jz 1f
    push %ecx
    mov $CMDLINE_MAX, %ecx
    call find32
    pop %ecx
    ret
1:  cmp $1, %esi             /* %esi is 0: ZF=0 */
    ret

fail:
    PUTS32 "virtio: FAIL "
    call puts32
    call newline32
    mov $EXIT_FAIL, %al
    call exit32

/* wait_done: the completion of the request just submitted on context %ebx: by interrupt the
 * first time if asked for, else polled. %eax = descriptor ID, %edx = length. */
wait_done:
    cmpl $0, irq_done
    jne 2f
    cmpl $-1, irq_pin
    je 2f
    mov %ebx, irq_ctx
    movl $2f, irq_resume
    sti
1:  hlt                      /* sti's shadow covers hlt: no wake-up is lost */
    jmp 1b
2:  call virtio_poll32
    ret

/* The one interrupt: acknowledge it at the device and the LAPIC, then continue at irq_resume
 * with interrupts off (the frame is dropped: this CPL0 code cannot use iret on this host). */
irq_handler:
    add $12, %esp
    movl $1, irq_done
    mov irq_ctx, %eax
    mov VCTX_BASE(%eax), %eax
    mov VM_INTERRUPT_STATUS(%eax), %ecx
    mov %ecx, VM_INTERRUPT_ACK(%eax)
    movl $0, LAPIC_EOI
    PUTS32 "virtio: interrupt on vector 0x30, status "
    mov %ecx, %eax
    call puthex32
    call newline32
    jmp *irq_resume

/* route_irq: IOAPIC pin irq_pin + slot index of transport %esi -> vector 0x30 on APIC 0. */
route_irq:
    cmpl $-1, irq_pin
    je 1f
    push %eax
    push %ecx
    push %edx
    mov %esi, %eax
    sub $VIRTIO_MMIO_BASE, %eax
    shr $9, %eax
    add irq_pin, %eax
    lea 0x11(,%eax,2), %ecx              /* IOAPIC_RTE_HI(pin) */
    mov %ecx, IOAPIC_REGSEL
    movl $0, IOAPIC_WIN
    dec %ecx
    mov %ecx, IOAPIC_REGSEL
    mov $IRQ_VECTOR, %edx
    push %esi
    mov $k_level, %edi
    call has_key
    pop %esi
    jne 2f
    or $RTE_LEVEL, %edx
2:  mov %edx, IOAPIC_WIN
    PUTS32 "virtio: pin "
    call putdec32
    PUTS32 " -> vector 0x30\n"
    pop %edx
    pop %ecx
    pop %eax
1:  ret

do_rng:
    call parsedec32
    jc 9f
    cmp $64, %eax
    ja 9f
    test %eax, %eax
    jz 9f
    mov %eax, %ebp
    mov $VIRTIO_ID_RNG, %eax
    call virtio_find32
    jne 8f
    call route_irq
    mov $rng_ctx, %ebx
    mov %esi, VCTX_BASE(%ebx)
    movl $RNG_QAREA, VCTX_QAREA(%ebx)
    call virtio_setup32
    jc 7f
    /* Zero the buffer so bytes the device did not write show. */
    mov $RNG_BUF, %edi
    mov %ebp, %ecx
    xor %eax, %eax
    rep stosb
    xor %ecx, %ecx
    mov $RNG_BUF, %eax
    mov %ebp, %edx
    mov $VRING_DESC_F_WRITE, %esi
    call virtio_desc32
    xor %eax, %eax
    call virtio_submit32
    call wait_done
    PUTS32 "virtio-rng: "
    mov %edx, %eax
    call putdec32
    PUTS32 " bytes:"
    test %edx, %edx
    jz 1f
    PUTC32 ' '
    mov $RNG_BUF, %esi
    mov %edx, %ecx
    call putbytes32
1:  call newline32
    ret
7:  mov $.Lsetup_rng, %esi
    jmp fail
8:  mov $.Lno_rng, %esi
    jmp fail
9:  mov $.Lbad_rng, %esi
    jmp fail

/* blk_again: sector 2 = 0x5a and a flush, on the queue do_blk set up. */
blk_again:
    mov $blk_ctx, %ebx
    mov $BLK_DATA, %edi
    mov $SECTOR, %ecx
    mov $WRITE_BYTE, %al
    rep stosb
    mov $VIRTIO_BLK_T_OUT, %eax
    mov $2, %edx
    call blk_request
    test %eax, %eax
    jnz 1f
    mov $VIRTIO_BLK_T_FLUSH, %eax
    xor %edx, %edx
    call blk_request
    test %eax, %eax
    jnz 1f
    PUTS32 "virtio-blk: wrote sector 2\n"
    ret
1:  mov $.Lblk_status, %esi
    jmp fail

/* blk_request: type %eax, sector %edx, data BLK_DATA; waits; %eax = status byte. */
blk_request:
    push %ecx
    push %esi
    push %edi
    xor %ecx, %ecx
    mov $BLK_HDR, %edi
    mov $BLK_DATA, %esi
    call virtio_blk_req32
    xor %eax, %eax
    call virtio_submit32
    call wait_done
    movzbl BLK_HDR+16, %eax
    pop %edi
    pop %esi
    pop %ecx
    ret

do_blk:
    mov $VIRTIO_ID_BLOCK, %eax
    call virtio_find32
    jne 8f
    call route_irq
    mov $blk_ctx, %ebx
    mov %esi, VCTX_BASE(%ebx)
    movl $BLK_QAREA, VCTX_QAREA(%ebx)
    call virtio_setup32
    jc 7f
    PUTS32 "virtio-blk: capacity "
    mov VM_CONFIG(%esi), %eax               /* capacity (low 32 bits), in 512-byte sectors */
    call putdec32
    PUTS32 " sectors\n"
    movl $SECTOR, vblk_len
    mov $VIRTIO_BLK_T_IN, %eax
    xor %edx, %edx
    movb $0, BLK_DATA + 64
    call blk_request
    test %eax, %eax
    jnz 6f
    PUTS32 "virtio-blk: sector 0: "
    mov $BLK_DATA, %esi
    mov $64, %ecx
    call putsn32
    call newline32
    mov $BLK_DATA, %edi
    mov $SECTOR, %ecx
    mov $WRITE_BYTE, %al
    rep stosb
    mov $VIRTIO_BLK_T_OUT, %eax
    mov $1, %edx
    call blk_request
    test %eax, %eax
    jnz 6f
    PUTS32 "virtio-blk: wrote sector 1"
    mov $k_noflush, %edi
    call has_key
    je 1f
    mov $VIRTIO_BLK_T_FLUSH, %eax
    xor %edx, %edx
    call blk_request
    PUTS32 ", flush status "
    call putdec32
    test %eax, %eax
    jnz 6f
1:  call newline32
    ret
6:  PUTS32 "virtio-blk: request status "
    call putdec32
    call newline32
    mov $.Lblk_status, %esi
    jmp fail
7:  mov $.Lsetup_blk, %esi
    jmp fail
8:  mov $.Lno_blk, %esi
    jmp fail

    .section .rodata
.Lsetup_rng:  .asciz "virtio-rng setup"
.Lno_rng:     .asciz "no virtio-rng device"
.Lbad_rng:    .asciz "rng= wants 1-64"
.Lsetup_blk:  .asciz "virtio-blk setup"
.Lno_blk:     .asciz "no virtio-blk device"
.Lblk_status: .asciz "virtio-blk request"

    .text
    .globl _start
_start:
    START32
    call pvh_check32
    call pvh_cmdline32
    mov %esi, cmdline
    movl $-1, irq_pin
    movl $0, irq_done
    mov $k_irqbase, %edi
    call has_key
    jne 1f
    call parsedec32
    jc 1f
    mov %eax, irq_pin
    mov $IRQ_VECTOR, %ecx
    mov $irq_handler, %eax
    call set_gate32
    call quiet_legacy32
1:  mov $k_rng, %edi
    call has_key
    jne 2f
    call do_rng
2:  mov $k_blk, %edi
    call has_key
    jne 3f
    call do_blk
3:  cmpl $-1, irq_pin
    je 4f
    cmpl $0, irq_done
    jne 4f
    mov $.Lno_irq, %esi
    jmp fail
4:  PUTS32 "virtio: done\n"
    mov $k_wait, %edi
    call has_key
    jne 6f
    mov $(COM1_THR + 5), %dx             /* LSR: bit 0 = data ready */
5:  in %dx, %al
    test $1, %al
    jz 5b
6:  mov $k_blkagain, %edi
    call has_key
    jne 7f
    call blk_again
7:
    mov $k_poweroff, %edi
    call has_key
    je poweroff32
    mov $k_reset, %edi
    call has_key
    je reset32
    mov $k_hang, %edi
    call has_key
    je hang32
    mov $k_xsave, %edi
    call has_key
    je end_xsave
    mov $EXIT_OK, %al
    call exit32

/* end_xsave: a fatal guest error on this host (see the header). */
end_xsave:
    mov %cr4, %eax
    or $(1 << 18), %eax                  /* CR4.OSXSAVE */
    mov %eax, %cr4
    mov $xsave_area, %edi
    mov $3, %eax                         /* x87 | SSE */
    xor %edx, %edx
    xsave (%edi)
    PUTS32 "virtio: xsave completed\n"
    mov $EXIT_UNEXPECTED, %al
    call exit32

    .section .rodata
.Lno_irq:     .asciz "no interrupt was taken"
