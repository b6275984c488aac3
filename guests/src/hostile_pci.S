/*
 * hostile_pci.S: a malicious driver of a modern virtio-blk-pci function (q35 or pc, direct
 * boot; `-device virtio-blk-pci,drive=..,disable-legacy=on`). Prints one line per step:
 *   "hostile-pci: msix garbage: used U"      MSI-X on, table entries with garbage (an address
 *                                             outside the MSI window, all-ones data, entries
 *                                             past the table size assigned), a read submitted
 *   "hostile-pci: bar over ram: read 0xXXXXXXXX"   BAR4 moved onto RAM at 128 MiB (the guest's
 *                                             own marker there), a notify written through it
 *   "hostile-pci: bar over bar: ok"          BAR4 moved onto BAR1 (the MSI-X table), then
 *                                             BAR1 onto BAR4's old place, memory decode on
 *   "hostile-pci: bar at 4g-: ok"            BAR4 at 0xfffff000 (its 16 KiB cross 4 GiB)
 *   "hostile-pci: sane read: <sector 0>"     BARs back where they were, device reset and
 *                                             set up again, a read of sector 0
 * then "hostile-pci: done" and halts.
 */
#define VIRTIO_PCI
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/pci.inc"
#include "include/virtio.inc"

#define QAREA       0x200000
#define HDR         0x210000
#define DATA        0x211000
#define RAM_MARK    0x08000000
#define SECTOR      512
#define WAIT_SPINS  200000
#define CAP_MSIX    0x11
#define VP_MSIX_CONFIG 0x10
#define VP_Q_MSIX   0x1a

    PVH_NOTE _start

    .section .bss
    .balign 4
ctx:        .skip VCTX_SIZE
slot:       .skip 4
bar1:       .skip 4
bar4:       .skip 4
msix_cap:   .skip 4

    .text
    .code32
    .globl _start
_start:
    START32
    /* Find the function (modern virtio-blk: 1af4:1042) and its BARs. */
    xor %ecx, %ecx
1:  mov $0, %bl
    call cfg_read
    cmp $0x10421af4, %eax
    je 2f
    inc %ecx
    cmp $32, %ecx
    jb 1b
    PUTS32 "hostile-pci: FAIL no virtio-blk-pci\n"
    mov $EXIT_FAIL, %al
    call exit32
2:  mov %ecx, slot
    mov $0x14, %bl
    call cfg_read
    and $0xfffffff0, %eax
    mov %eax, bar1
    mov $VIRTIO_ID_BLOCK, %eax
    call virtio_find32
    mov %esi, bar4
    mov %esi, ctx + VCTX_BASE
    movl $QAREA, ctx + VCTX_QAREA
    movl $SECTOR, vblk_len
    /* The MSI-X capability. */
    mov $0x34, %bl
    call cfg_read
    movzbl %al, %edx
3:  test %edx, %edx
    jz 4f
    mov %dl, %bl
    call cfg_read
    cmp $CAP_MSIX, %al
    je 5f
    movzbl %ah, %edx
    jmp 3b
4:  PUTS32 "hostile-pci: FAIL no MSI-X capability\n"
    mov $EXIT_FAIL, %al
    call exit32
5:  mov %edx, msix_cap
    movl $0x5a5a5a5a, RAM_MARK

    /* 1. Garbage MSI-X. */
    mov $ctx, %ebx
    call virtio_setup32
    mov bar1, %edi
    movl $0x12345678, 0(%edi)            /* entry 0: outside the 0xfee00000 window */
    movl $0xdeadbeef, 4(%edi)
    movl $0xffffffff, 8(%edi)
    movl $0, 12(%edi)
    movl $0xfee00000, 16(%edi)           /* entry 1: in the window, all-ones data */
    movl $0, 20(%edi)
    movl $0xffffffff, 24(%edi)
    movl $0, 28(%edi)
    mov bar4, %esi
    movw $0x7ff, VP_MSIX_CONFIG(%esi)    /* past the table */
    movw $0, VP_Q_SELECT(%esi)
    movw $1, VP_Q_MSIX(%esi)
    mov msix_cap, %ecx
    mov %cl, %bl
    mov slot, %ecx
    call cfg_read
    or $0x80000000, %eax                 /* MSI-X enable (control bit 15) */
    and $0xbfffffff, %eax                /* function mask off */
    call cfg_write
    call read_sector0
    PUTS32 "hostile-pci: msix garbage: used "
    movzwl QAREA + VQ_USED + 2, %eax
    call putdec32
    call newline32
    /* Entry 1 unmasked and masked again, vector 0x7ff on the queue too. */
    mov bar1, %edi
    movl $1, 28(%edi)
    movl $0, 28(%edi)
    mov bar4, %esi
    movw $0x7ff, VP_Q_MSIX(%esi)

    /* 2. BAR4 over RAM: the guest sees RAM there (KVM's slot), and the device is gone from it. */
    mov $0x20, %bl
    mov slot, %ecx
    mov $RAM_MARK, %eax
    call cfg_write
    PUTS32 "hostile-pci: bar over ram: read "
    mov RAM_MARK, %eax
    call puthex32
    call newline32
    movw $0, RAM_MARK + 0x3000           /* queue 0's notify address, now RAM */

    /* 3. BAR4 onto BAR1, BAR1 onto BAR4's old place. */
    mov $0x20, %bl
    mov bar1, %eax
    call cfg_write
    mov $0x14, %bl
    mov bar4, %eax
    call cfg_write
    mov bar4, %esi
    mov (%esi), %eax                     /* whatever answers there */
    PUTS32 "hostile-pci: bar over bar: ok\n"

    /* 4. BAR4 across 4 GiB. */
    mov $0x20, %bl
    mov $0xfffff000, %eax
    call cfg_write
    PUTS32 "hostile-pci: bar at 4g-: ok\n"

    /* 5. Back home, reset, a sane read. */
    mov $0x14, %bl
    mov bar1, %eax
    call cfg_write
    mov $0x20, %bl
    mov bar4, %eax
    call cfg_write
    mov msix_cap, %ecx
    mov %cl, %bl
    mov slot, %ecx
    call cfg_read
    and $0x7fffffff, %eax                /* MSI-X off */
    call cfg_write
    mov $ctx, %ebx
    call virtio_setup32
    movb $0, DATA
    call read_sector0
    PUTS32 "hostile-pci: sane read: "
    cmpb $0, HDR + 16
    jne 6f
    mov $DATA, %esi
    mov $60, %ecx
    call putsn32
    jmp 7f
6:  PUTS32 "FAIL"
7:  call newline32
    PUTS32 "hostile-pci: done\n"
    jmp hang32

/* read_sector0: submit a read of sector 0 on context ctx and wait a bounded time. */
read_sector0:
    push %eax
    push %ebx
    push %ecx
    push %edx
    push %esi
    push %edi
    mov $ctx, %ebx
    movb $0xff, HDR + 16
    mov $VIRTIO_BLK_T_IN, %eax
    xor %edx, %edx
    xor %ecx, %ecx
    mov $HDR, %edi
    mov $DATA, %esi
    call virtio_blk_req32
    xor %eax, %eax
    call virtio_submit32
    mov ctx + VCTX_USED, %edx
    mov $WAIT_SPINS, %ecx
1:  movzwl QAREA + VQ_USED + 2, %eax
    cmp %dx, %ax
    jne 2f
    dec %ecx
    jnz 1b
    jmp 3f
2:  incl ctx + VCTX_USED
3:  pop %edi
    pop %esi
    pop %edx
    pop %ecx
    pop %ebx
    pop %eax
    ret
