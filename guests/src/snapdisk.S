/*
 * snapdisk.S: a counter that keeps a virtio-blk-pci disk, MSI-X and the VGA busy, for the
 * snapshot tests of the default pc/q35 machine (tests/snapshot_pci.rs). Every 5 LAPIC timer
 * ticks (vector 0x30, ~10 ms) it bumps a count, draws row (count % 200) of a 320x200x32 VBE
 * picture in the standard VGA's framebuffer (BAR0) in a colour made from the count, fills a
 * sector with the count's low byte and writes it to sector `count` of the first modern
 * virtio-blk-pci function; the completion is MSI-X vector 0 (table entry 0 -> LAPIC vector 0x31,
 * assigned to queue 0). Only when that interrupt arrived does it print "count N". A restore that
 * loses the device's queue position, its vector table or its routes stops the counting.
 * Fails (EXIT_FAIL) without the disk or the VGA, or when a request does not return status 0.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"
#include "include/pci.inc"
#include "include/virtio.inc"

#define TIMER_VECTOR 0x30
#define MSI_VECTOR   0x31
#define LVT_PERIODIC (1 << 17)
#define TICKS_PER_COUNT 5
#define TIMER_INIT 10000000
#define QAREA  0x200000
#define HDR    0x204000
#define DATA   0x205000
#define VGA_ID 0x11111234
#define VBLK_ID ((VIRTIO_PCI_MODERN_BASE + VIRTIO_ID_BLOCK) << 16 | VIRTIO_PCI_VENDOR)
#define WIDTH  320
#define HEIGHT 200

    PVH_NOTE _start

    .code32
    .text
/* Interrupts are only enabled in `sti; hlt`: the handlers go on after the hlt (no iret, which
 * this host's KVM cannot emulate). */
timer_handler:
    mov stack, %esp
    incl ticks
    movl $0, LAPIC_EOI
    jmp woke

msi_handler:
    mov stack, %esp
    incl irqs
    movl $0, LAPIC_EOI
    jmp woke

/* find_slot: %ecx = the first slot on bus 0 whose ID dword is %edx (ZF=1), ZF=0 if none. */
find_slot:
    push %eax
    push %ebx
    xor %ecx, %ecx
1:  mov $0, %bl
    call cfg_read
    cmp %edx, %eax
    je 2f
    inc %ecx
    cmp $32, %ecx
    jb 1b
    or $1, %ecx
2:  pop %ebx
    pop %eax
    ret

/* vbe: DISPI register %ax = %cx. */
vbe:
    push %edx
    mov $0x1ce, %dx
    out %ax, %dx
    mov $0x1cf, %dx
    mov %cx, %ax
    out %ax, %dx
    pop %edx
    ret

fail:
    PUTS32 "snapdisk: failed\n"
    mov $EXIT_FAIL, %al
    jmp exit32

    .globl _start
_start:
    START32
    mov $TIMER_VECTOR, %ecx
    mov $timer_handler, %eax
    call set_gate32
    mov $MSI_VECTOR, %ecx
    mov $msi_handler, %eax
    call set_gate32
    call quiet_legacy32

    /* The VGA: 320x200x32 VBE, framebuffer at BAR0. */
    mov $VGA_ID, %edx
    call find_slot
    jnz fail
    mov $0x10, %bl
    call cfg_read
    and $0xfffffff0, %eax
    jz fail
    mov %eax, fb
    mov $0x04, %bl
    call cfg_read
    or $0x2, %eax
    and $0xffff, %eax
    call cfg_write
    mov $1, %ax
    mov $WIDTH, %cx
    call vbe
    mov $2, %ax
    mov $HEIGHT, %cx
    call vbe
    mov $3, %ax
    mov $32, %cx
    call vbe
    mov $4, %ax
    mov $0x41, %cx                   /* enabled, linear framebuffer */
    call vbe
    mov $0x3c0, %dx                  /* attribute index with the palette source bit: shown */
    mov $0x20, %al
    out %al, %dx

    /* The disk: modern virtio-blk-pci, queue 0 on MSI-X vector 0. */
    mov $VBLK_ID, %edx
    call find_slot
    jnz fail
    mov %ecx, slot
    mov $VIRTIO_ID_BLOCK, %eax
    call virtio_find32
    jnz fail
    mov $ctx, %ebx
    mov %esi, VCTX_BASE(%ebx)
    movl $QAREA, VCTX_QAREA(%ebx)
    call virtio_setup32
    jc fail
    movw $0xffff, 0x10(%esi)         /* config_msix_vector: none */
    movw $0, VP_Q_SELECT(%esi)
    movw $0, 0x1a(%esi)              /* queue_msix_vector: 0 */
    cmpw $0, 0x1a(%esi)
    jne fail
    mov slot, %ecx
    mov $0x14, %bl                   /* BAR1: the MSI-X table */
    call cfg_read
    and $0xfffffff0, %eax
    jz fail
    movl $0xfee00000, 0(%eax)
    movl $0, 4(%eax)
    movl $MSI_VECTOR, 8(%eax)
    movl $0, 12(%eax)                /* unmasked */
    mov $0x34, %bl                   /* walk the capabilities to MSI-X */
    call cfg_read
1:  and $0xfc, %eax
    jz fail
    mov %al, %bl
    call cfg_read
    cmp $0x11, %al
    je 2f
    shr $8, %eax
    jmp 1b
2:  and $0x3fffffff, %eax            /* function mask off */
    or $0x80000000, %eax             /* MSI-X enable */
    call cfg_write
    movl $512, vblk_len

    movl $0xb, LAPIC_TIMER_DIV                          /* divide by 1 */
    movl $(TIMER_VECTOR | LVT_PERIODIC), LAPIC_LVT_TIMER
    movl $TIMER_INIT, LAPIC_TIMER_INIT
    PUTS32 "snapdisk: running\n"
    mov %esp, stack
main_loop:
    sti
    hlt
woke:
    cli
    cmpl $0, pending
    je 2f
    mov irqs, %eax
    cmp irqs_seen, %eax
    je main_loop
    mov %eax, irqs_seen
    mov $ctx, %ebx
    call virtio_poll32
    cmpb $0, HDR+16
    jne fail
    movl $0, pending
    PUTS32 "count "
    mov count, %eax
    call putdec32
    call newline32
    jmp main_loop
2:  mov ticks, %eax
    sub last, %eax
    cmp $TICKS_PER_COUNT, %eax
    jb main_loop
    addl $TICKS_PER_COUNT, last
    incl count
    /* Row count % HEIGHT in colour count * 0x010305. */
    mov count, %eax
    xor %edx, %edx
    mov $HEIGHT, %ecx
    div %ecx
    imul $(WIDTH * 4), %edx, %edi
    add fb, %edi
    mov count, %eax
    imul $0x010305, %eax, %eax
    mov $WIDTH, %ecx
    rep stosl
    /* Sector `count` = the count's low byte, 512 times. */
    mov count, %eax
    imul $0x01010101, %eax, %eax
    mov $DATA, %edi
    mov $128, %ecx
    rep stosl
    mov $ctx, %ebx
    mov $VIRTIO_BLK_T_OUT, %eax
    mov count, %edx
    mov $HDR, %edi
    mov $DATA, %esi
    xor %ecx, %ecx
    call virtio_blk_req32
    xor %eax, %eax
    movl $1, pending
    call virtio_submit32
    jmp main_loop

    .data
ticks:     .long 0
last:      .long 0
count:     .long 0
stack:     .long 0
irqs:      .long 0
irqs_seen: .long 0
pending:   .long 0
fb:        .long 0
slot:      .long 0

    .bss
    .balign 16
ctx: .skip VCTX_SIZE
