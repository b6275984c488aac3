/*
 * hostile_legacy.S: bad bus-master DMA on PIIX IDE and out-of-range VGA/VBE registers (pc,
 * direct boot, a raw disk on the primary master, `-vga std`). One line per step:
 *   "hostile-ide: NAME: bm 0xSS ata 0xSS"  a READ DMA of sector 0 whose PRD table is NAME:
 *       table_outside  the PRD table itself at 0xe0000000 (the PCI hole, no RAM)
 *       into_mmio      one PRD into the IOAPIC page
 *       past_ram       one 64 KiB PRD starting 256 bytes below the end of RAM (256 MiB)
 *       no_eot         512 two-byte PRDs and none marked last
 *     bm is the bus-master status after a bounded wait (bit 1 error, bit 2 interrupt), ata the
 *     ATA status (bit 0 ERR)
 *   "hostile-ide: sane read: <sector 0>"   a PIO READ SECTORS afterwards
 *   "hostile-vga: dispi I=0xVVVV ..."      every DISPI register after all-ones writes (index
 *       0-9 and 0xff), the VBE enabled with an LFB, the legacy window written with bank 0xffff,
 *       VGA sequencer/graphics/CRTC/attribute/DAC indexes and data all-ones
 * then "hostile-legacy: done" and halts (the test asks QMP for a screendump of that state).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define BM_PRD      0x200000
#define DATA        0x210000
#define WAIT_SPINS  200000
#define ATA_DATA    0x1f0
#define ATA_COUNT   0x1f2
#define ATA_LBA0    0x1f3
#define ATA_LBA1    0x1f4
#define ATA_LBA2    0x1f5
#define ATA_DEV     0x1f6
#define ATA_CMD     0x1f7
#define PCI_ADDR    0xcf8
#define PCI_DATA    0xcfc
#define IDE_FN      ((1 << 11) | (1 << 8))      /* 00:01.1 */
#define VBE_INDEX   0x1ce
#define VBE_DATA    0x1cf

    PVH_NOTE _start

    .section .bss
    .balign 4
bmiba:      .skip 4

    .text
    .code32

/* IDE_DMA name, prd_table: a READ DMA of sector 0 through the PRD table at prd_table. */
.macro IDE_DMA name, table
    PUTS32 "hostile-ide: \name: bm 0x"
    mov $\table, %eax
    call ide_dma
.endm

    .globl _start
_start:
    START32
    /* PIIX IDE: BAR4 (bus master), I/O and bus mastering on. */
    mov $(0x80000000 | IDE_FN | 0x20), %eax
    mov $PCI_ADDR, %dx
    out %eax, %dx
    mov $PCI_DATA, %dx
    in %dx, %eax
    and $0xfffc, %eax
    mov %eax, bmiba
    test %eax, %eax
    jnz 1f
    PUTS32 "hostile-ide: FAIL no bus-master BAR\n"
    mov $EXIT_FAIL, %al
    call exit32
1:  mov $(0x80000000 | IDE_FN | 0x04), %eax
    mov $PCI_ADDR, %dx
    out %eax, %dx
    mov $PCI_DATA, %dx
    in %dx, %eax
    or $0x5, %eax
    out %eax, %dx

    /* Tables in RAM for the last three attacks. */
    movl $0xfec00000, BM_PRD                    /* into_mmio */
    movl $(0x80000000 | 512), BM_PRD + 4
    movl $0x0fffff00, BM_PRD + 0x10             /* past_ram: 64 KiB (count 0) */
    movl $0x80000000, BM_PRD + 0x14
    mov $(BM_PRD + 0x1000), %edi                /* no_eot */
    mov $512, %ecx
2:  movl $DATA, (%edi)
    movl $2, 4(%edi)
    add $8, %edi
    dec %ecx
    jnz 2b

    IDE_DMA table_outside, 0xe0000000
    IDE_DMA into_mmio, BM_PRD
    IDE_DMA past_ram, (BM_PRD + 0x10)
    IDE_DMA no_eot, (BM_PRD + 0x1000)

    /* The drive still reads (PIO). */
    movb $0, DATA
    mov $0x20, %al                              /* READ SECTORS */
    call ata_cmd
    mov $WAIT_SPINS, %ecx
    mov $ATA_CMD, %dx
3:  in %dx, %al
    test $0x80, %al                             /* BSY */
    jnz 4f
    test $0x08, %al                             /* DRQ */
    jnz 5f
4:  dec %ecx
    jnz 3b
5:  mov $DATA, %edi
    mov $256, %ecx
    mov $ATA_DATA, %dx
    rep insw
    PUTS32 "hostile-ide: sane read: "
    mov $DATA, %esi
    mov $60, %ecx
    call putsn32
    call newline32

    /* VBE: every DISPI register and one past them all-ones, enabled with an LFB. */
    xor %ebx, %ebx
6:  mov $VBE_INDEX, %dx
    mov %bx, %ax
    out %ax, %dx
    mov $VBE_DATA, %dx
    mov $0xffff, %ax
    cmp $4, %ebx
    jne 7f
    mov $0x41, %ax                              /* ENABLE: enabled | LFB */
7:  out %ax, %dx
    inc %ebx
    cmp $10, %ebx
    jb 6b
    mov $VBE_INDEX, %dx
    mov $0xff, %ax
    out %ax, %dx
    mov $VBE_DATA, %dx
    mov $0x1234, %ax
    out %ax, %dx
    /* The legacy window with bank 0xffff. */
    movl $0xffffffff, 0xa0000
    movl $0xffffffff, 0xafffc
    /* VGA: all-ones indexes and data. */
    mov $0x3c4, %dx                             /* sequencer */
    mov $0xffff, %ax
    out %ax, %dx
    mov $0x3ce, %dx                             /* graphics */
    out %ax, %dx
    mov $0x3d4, %dx                             /* CRTC (colour) */
    out %ax, %dx
    mov $0x3b4, %dx                             /* CRTC (mono) */
    out %ax, %dx
    mov $0x3da, %dx
    in %dx, %al                                 /* attribute flip-flop reset */
    mov $0x3c0, %dx
    mov $0xff, %al
    out %al, %dx
    out %al, %dx
    mov $0x3c8, %dx                             /* DAC write index 0xff, 16 components */
    out %al, %dx
    mov $0x3c9, %dx
    mov $16, %ecx
8:  out %al, %dx
    dec %ecx
    jnz 8b
    movl $0xffffffff, 0xa0000
    PUTS32 "hostile-vga: dispi"
    xor %ebx, %ebx
9:  PUTC32 ' '
    mov %ebx, %eax
    call puthex32
    PUTC32 '='
    mov $VBE_INDEX, %dx
    mov %bx, %ax
    out %ax, %dx
    mov $VBE_DATA, %dx
    in %dx, %ax
    movzwl %ax, %eax
    call puthex32
    inc %ebx
    cmp $10, %ebx
    jb 9b
    call newline32
    PUTS32 "hostile-legacy: done\n"
    jmp hang32

/* ata_cmd: select the master with LBA 0, one sector, and write command %al. */
ata_cmd:
    push %eax
    push %edx
    mov %al, %ah
    mov $ATA_DEV, %dx
    mov $0xe0, %al
    out %al, %dx
    mov $ATA_COUNT, %dx
    mov $1, %al
    out %al, %dx
    xor %al, %al
    mov $ATA_LBA0, %dx
    out %al, %dx
    mov $ATA_LBA1, %dx
    out %al, %dx
    mov $ATA_LBA2, %dx
    out %al, %dx
    mov %ah, %al
    mov $ATA_CMD, %dx
    out %al, %dx
    pop %edx
    pop %eax
    ret

/* ide_dma: a READ DMA of sector 0 through the PRD table at %eax; waits a bounded time for the
 * bus master to stop, prints "SS ata 0xSS", then stops the engine and clears its status. */
ide_dma:
    push %ecx
    push %edx
    push %ebx
    mov bmiba, %ebx
    lea 4(%ebx), %edx
    out %eax, %dx                               /* PRD table address */
    lea 2(%ebx), %edx
    mov $0x06, %al                              /* clear error and interrupt */
    out %al, %dx
    mov $0xc8, %al                              /* READ DMA */
    call ata_cmd
    mov %ebx, %edx
    mov $0x09, %al                              /* start, device to memory */
    out %al, %dx
    mov $WAIT_SPINS, %ecx
    lea 2(%ebx), %edx
1:  in %dx, %al
    test $0x01, %al                             /* still active */
    jz 2f
    test $0x06, %al
    jnz 2f
    dec %ecx
    jnz 1b
2:  movzbl %al, %eax
    call puthex8_32
    PUTS32 " ata 0x"
    mov $ATA_CMD, %dx
    in %dx, %al
    movzbl %al, %eax
    call puthex8_32
    call newline32
    mov %ebx, %edx
    xor %al, %al
    out %al, %dx                                /* stop */
    lea 2(%ebx), %edx
    mov $0x06, %al
    out %al, %dx
    pop %ebx
    pop %edx
    pop %ecx
    ret
