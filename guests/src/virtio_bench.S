/*
 * virtio_bench.S: virtio-blk read benchmark (benches/virtio_blk.py). Ring 0 sets up the first
 * virtio-blk device with guests/src/include/virtio.inc (interrupts suppressed with
 * VRING_AVAIL_F_NO_INTERRUPT) and prebuilds `qd` read requests of `bs` bytes; then it drops to
 * ring 3 with sysexit, where the loop runs natively: complete (poll the used ring), pick the next
 * sector, resubmit (the driver skips the notification while the device sets NO_NOTIFY), until
 * `n` requests are done. Sectors are random (a 32-bit LCG, `bs`-aligned over the whole disk) or
 * sequential with `seq`. Command line: "n=N bs=BYTES qd=Q [seq]" (defaults n=0 bs=4096 qd=1).
 * Prints "virtio_bench: n=N bs=B qd=Q rand|seq" before the loop and "virtio_bench: errors E"
 * after it; exits EXIT_OK (status 33), EXIT_FAIL if the device is missing or a request failed.
 * Built twice: virtio_bench.elf (virtio-mmio) and virtio_bench_pci.elf (VIRTIO_PCI: the first
 * virtio-blk-pci function, its BAR4 programmed by the VMM or firmware). virtio_bench_pci.elf
 * with "move=ADDR" (decimal) runs one request in ring 0 with the device as set up, then moves
 * BAR4 to ADDR (memory decode off, BAR4/BAR5 rewritten, decode on) while the device stays
 * active, prints "virtio_bench: BAR4 moved to 0x...", and runs the loop through the new address.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#ifdef VIRTIO_PCI
#include "include/pci.inc"
#endif
#include "include/virtio.inc"

#define QAREA           0x200000
#define HDRS            0x204000      /* 32 bytes per slot: header (16) + status (1) */
#define DATA            0x400000      /* bs bytes per slot */
#define MAX_QD          32
#define MAX_BS          (1 << 20)
#define MSR_SYSENTER_CS  0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define KERNEL_CS       0x08
#define USER_DS         0x23

    PVH_NOTE _start

    .section .rodata
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff         /* 0x08: ring 0 code (SYSENTER_CS) */
    .quad 0x00cf92000000ffff         /* 0x10: ring 0 data */
    .quad 0x00cffa000000ffff         /* 0x18: ring 3 code */
    .quad 0x00cff2000000ffff         /* 0x20: ring 3 data */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt
k_n:   .asciz "n="
k_bs:  .asciz "bs="
k_qd:  .asciz "qd="
k_seq: .asciz "seq"
k_move: .asciz "move="

    .section .bss
    .balign 16
    .skip 4096
ring0_stack:
    .skip 4096
ring3_stack:
ctx:        .skip VCTX_SIZE
n_total:    .skip 4
qd:         .skip 4
bs_sectors: .skip 4
blocks:     .skip 4              /* capacity in bs units */
seq_mode:   .skip 4
next_block: .skip 4              /* sequential position / LCG state */
errors:     .skip 4
cmdline:    .skip 4
move_addr:  .skip 4

    .text
    .code32
/* key_value: %edi = key; %eax = its decimal value, or %eax unchanged if absent. */
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
    PUTS32 "virtio_bench: FAIL "
    call puts32
    call newline32
    mov $EXIT_FAIL, %al
    call exit32

/* next_sector: %edx = the sector of the next request (ring 3 safe). */
next_sector:
    push %eax
    mov next_block, %eax
    cmpl $0, seq_mode
    jne 1f
    imul $1103515245, %eax, %eax
    add $12345, %eax
    mov %eax, next_block
    shr $8, %eax
    jmp 2f
1:  lea 1(%eax), %edx
    mov %edx, next_block
2:  xor %edx, %edx
    divl blocks                       /* %edx = block number */
    mov %edx, %eax
    mull bs_sectors                   /* disks up to 2 TiB */
    mov %eax, %edx
    pop %eax
    ret

/* submit_slot: give the request of slot %ecx (descriptors 3 * %ecx..) a new sector, submit it. */
submit_slot:
    push %eax
    push %edx
    push %edi
    call next_sector
    mov %ecx, %edi
    shl $5, %edi
    add $HDRS, %edi
    mov %edx, 8(%edi)
    movb $0xff, 16(%edi)
    lea (%ecx,%ecx,2), %eax
    call virtio_submit32
    pop %edi
    pop %edx
    pop %eax
    ret

/* Ring 3: the measured loop. %esi = submitted, %ebp = completed. */
user_loop:
    mov $USER_DS, %ax
    mov %ax, %ds
    mov %ax, %es
    mov $ctx, %ebx
    xor %esi, %esi
    xor %ebp, %ebp
    xor %ecx, %ecx
1:  cmp qd, %ecx                      /* fill the queue */
    jae 2f
    cmp n_total, %esi
    jae 2f
    call submit_slot
    inc %esi
    inc %ecx
    jmp 1b
2:  cmp n_total, %ebp
    jae 4f
    call virtio_poll32                /* %eax = head = 3 * slot */
    inc %ebp
    xor %edx, %edx
    mov $3, %ecx
    div %ecx
    mov %eax, %ecx                    /* slot */
    mov %ecx, %edi
    shl $5, %edi
    cmpb $0, HDRS+16(%edi)
    je 3f
    incl errors
3:  cmp n_total, %esi
    jae 2b
    call submit_slot
    inc %esi
    jmp 2b
4:  sysenter

back_in_ring0:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    PUTS32 "virtio_bench: errors "
    mov errors, %eax
    call putdec32
    call newline32
    cmpl $0, errors
    jne 1f
    mov $EXIT_OK, %al
    call exit32
1:  mov $EXIT_FAIL, %al
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
    mov $1, %eax
    mov $k_qd, %edi
    call key_value
    mov %eax, qd
    mov $4096, %eax
    mov $k_bs, %edi
    call key_value
    mov %eax, vblk_len
    movl $0, seq_mode
    mov cmdline, %esi
    test %esi, %esi
    jz 2f
    mov $CMDLINE_MAX, %ecx
    mov $k_seq, %edi
    call find32
    jne 2f
    movl $1, seq_mode
2:  mov qd, %eax
    test %eax, %eax
    jz 8f
    cmp $MAX_QD, %eax
    ja 8f
    mov vblk_len, %eax
    test $511, %eax
    jnz 8f
    test %eax, %eax
    jz 8f
    cmp $MAX_BS, %eax
    ja 8f
    shr $9, %eax
    mov %eax, bs_sectors
    mov $VIRTIO_ID_BLOCK, %eax
    call virtio_find32
    jne 9f
    mov $ctx, %ebx
    mov %esi, VCTX_BASE(%ebx)
    movl $QAREA, VCTX_QAREA(%ebx)
    call virtio_setup32
    jc 9f
    mov VCTX_QSIZE(%ebx), %eax
    mov qd, %ecx
    lea (%ecx,%ecx,2), %ecx
    cmp %eax, %ecx                    /* 3 descriptors per request must fit */
    ja 8f
    movw $VRING_AVAIL_F_NO_INTERRUPT, QAREA+VQ_AVAIL
    mov VM_CONFIG(%esi), %eax         /* capacity in sectors (low 32 bits) */
    xor %edx, %edx
    divl bs_sectors
    test %eax, %eax
    jz 8f
    mov %eax, blocks
    movl $1, next_block
    movl $0, errors
    /* Prebuild the read requests: slot s uses descriptors 3s..3s+2. */
    xor %ecx, %ecx
    mov $HDRS, %edi
    mov $DATA, %esi
3:  cmp qd, %ecx
    jae 4f
    push %ecx
    lea (%ecx,%ecx,2), %ecx
    mov $VIRTIO_BLK_T_IN, %eax
    xor %edx, %edx
    call virtio_blk_req32
    pop %ecx
    add $32, %edi
    add vblk_len, %esi
    inc %ecx
    jmp 3b
4:  PUTS32 "virtio_bench: n="
    mov n_total, %eax
    call putdec32
    PUTS32 " bs="
    mov vblk_len, %eax
    call putdec32
    PUTS32 " qd="
    mov qd, %eax
    call putdec32
    cmpl $0, seq_mode
    jne 5f
    PUTS32 " rand\n"
    jmp 6f
5:  PUTS32 " seq\n"
6:
#ifdef VIRTIO_PCI
    xor %eax, %eax
    mov $k_move, %edi
    call key_value
    mov %eax, move_addr
    test %eax, %eax
    jz 7f
    call move_bar4
7:
#endif
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
#ifdef VIRTIO_PCI
/* move_bar4: one request through BAR4 where it is, then BAR4 moved to move_addr while the
 * device is live (DRIVER_OK, its queue set up). Ring 0. */
move_bar4:
    mov $ctx, %ebx
    xor %ecx, %ecx
    call submit_slot
    call virtio_poll32
    cmpb $0, HDRS+16
    je 1f
    incl errors
1:  mov virtio_slot, %ecx
    mov $0x04, %bl
    call cfg_read
    and $0xfffd, %eax                /* memory decode off */
    call cfg_write
    push %eax
    mov $0x20, %bl
    mov move_addr, %eax
    call cfg_write
    mov $0x24, %bl
    xor %eax, %eax
    call cfg_write
    pop %eax
    mov $0x04, %bl
    or $0x2, %eax                    /* and on again */
    call cfg_write
    mov move_addr, %eax
    mov %eax, ctx+VCTX_BASE
    PUTS32 "virtio_bench: BAR4 moved to "
    call puthex32
    call newline32
    ret
#endif
9:  mov $.Lno_blk, %esi
    jmp fail

    .section .rodata
.Lbad_args: .asciz "bad n=/bs=/qd= (bs: multiple of 512 up to 1 MiB, qd 1-32, 3 qd <= queue size)"
.Lno_blk:   .asciz "no usable virtio-blk device"
