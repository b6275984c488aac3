/*
 * pci_bar.S: move the BARs of QEMU's pci-testdev while the guest runs and look where the device
 * answers. Needs two pci-testdevs at 00:03.0 and 00:04.0 (-device pci-testdev,addr=3 and
 * addr=4); their BARs are programmed by firmware (QEMU's SeaBIOS) or rvmm (no firmware).
 *
 * pci-testdev (hw/misc/pci-testdev.c): writing byte n to BAR offset 0 selects test n; reads then
 * return that test's header: the test number at +0, the name at +16 ("mmio-no-eventfd" for test
 * 0, "portio-..." through the I/O BAR). Unclaimed MMIO and ports read all-ones.
 *
 * Each line printed is "what: value" for the host test to check:
 *   bar0 <A> / at-a <name dword>          the device at its first address
 *   moved <B> / at-b <name> / old-a <ffffffff>   BAR0 moved to B: only B answers
 *   count-b <n>                           3 no-eventfd writes at B+2048 counted
 *   wildcard-b <n>                        3 writes at B+2049 (an ioeventfd under KVM: 0)
 *   overlap: dev3 <test> dev4 <test>      dev3's BAR0 written over dev4's: who answers where
 *   moved-d <D> / at-d <test> / old-b <...>       after the overlap, dev3 moved to a free D
 *   decode-off <...> / decode-on <test>   COMMAND memory decode cleared and set again
 *   bar1 <P> / io-at-p <name> / io-moved <Q> / io-at-q <name> / io-old-p <...>
 * With a ROM on 00:03.0 (romfile=, the file's first dword checked by the host):
 *   rom <R, as placed> / rom-at-r <dword> / rom-moved <S> / rom-at-s <dword> / rom-old-r <...>
 *   rom-written <dword after a write> / rom-off <...after disabling>; else "rom: none".
 * Exits EXIT_OK (33).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/pci.inc"

#define DEV3 3
#define DEV4 4
/* Where BARs are moved to: free on rvmm's and QEMU's pc and q35. */
#define NEW_B 0xd0000000
#define NEW_D 0xd0100000
#define NEW_Q 0x9000
#define NEW_S 0xd0200000
#define ROM_REG 0x30

    PVH_NOTE _start

    .code32
    .text
/* bar0: %eax = memory address in BAR0 of slot %ecx. */
bar0:
    mov $0x10, %bl
    call cfg_read
    and $0xfffffff0, %eax
    ret

/* set_bar0: BAR0 of slot %ecx = %eax. */
set_bar0:
    mov $0x10, %bl
    jmp cfg_write

/* show: print the label at %esi, ": ", %eax in hex and a newline. */
show:
    call puts32
    PUTC32 ':'
    PUTC32 ' '
    call puthex32
    call newline32
    ret

.macro SHOW label
    .pushsection .rodata
.Lshow_\@: .asciz "\label"
    .popsection
    push %esi
    mov $.Lshow_\@, %esi
    call show
    pop %esi
.endm

    .globl _start
_start:
    START32
    call pvh_check32

    /* The device at its first address: select test 0, read the name. */
    mov $DEV3, %ecx
    call bar0
    mov %eax, %edi                   /* A */
    SHOW "bar0"
    movb $0, (%edi)
    mov 16(%edi), %eax
    SHOW "at-a"

    /* Move BAR0 to B: only B answers. */
    mov $NEW_B, %eax
    call set_bar0
    call bar0
    SHOW "moved"
    mov $NEW_B, %esi
    movb $0, (%esi)
    mov 16(%esi), %eax
    SHOW "at-b"
    mov 16(%edi), %eax
    SHOW "old-a"

    /* Test 0 counts byte writes of its data (0xfa) at its offset, 2048. */
    movb $0xfa, 2048(%esi)
    movb $0xfa, 2048(%esi)
    movb $0xfa, 2048(%esi)
    mov 12(%esi), %eax
    SHOW "count-b"
    /* Test 1 (wildcard eventfd) at offset 2049: KVM's ioeventfd takes the writes at B. */
    movb $1, (%esi)
    movb $0xce, 2049(%esi)
    movb $0xce, 2049(%esi)
    movb $0xce, 2049(%esi)
    mov 12(%esi), %eax
    SHOW "wildcard-b"

    /* Overlap: dev3 selects test 2, dev4 test 0; then dev3's BAR0 is written over dev4's. */
    movb $2, (%esi)
    mov $DEV4, %ecx
    call bar0
    mov %eax, %edi                   /* C: dev4's BAR0 */
    movb $0, (%edi)
    mov $DEV3, %ecx
    mov %edi, %eax
    call set_bar0
    PUTS32 "overlap: b "
    movzbl (%esi), %eax
    call puthex32
    PUTS32 " c "
    movzbl (%edi), %eax
    call puthex32
    call newline32

    /* Then to a free address D: dev3 (test 2) answers there, nothing at B. */
    mov $NEW_D, %eax
    call set_bar0
    call bar0
    SHOW "moved-d"
    mov $NEW_D, %edi
    movzbl (%edi), %eax
    SHOW "at-d"
    mov 16(%esi), %eax
    SHOW "old-b"

    /* Memory decode off and on again. */
    mov $0x04, %bl
    call cfg_read
    push %eax
    and $0xfffffffd, %eax
    call cfg_write
    mov 16(%edi), %eax
    SHOW "decode-off"
    pop %eax
    call cfg_write
    movzbl (%edi), %eax
    SHOW "decode-on"

    /* The I/O BAR: select portio test 3 (byte 0 at BAR1+0), read the name, move it to Q. */
    mov $0x14, %bl
    call cfg_read
    and $0xfffffffc, %eax
    mov %eax, %edi                   /* P */
    SHOW "bar1"
    mov %edi, %edx
    xor %al, %al
    out %al, %dx
    add $16, %dx
    in %dx, %eax
    SHOW "io-at-p"
    mov $NEW_Q | 1, %eax
    mov $0x14, %bl
    call cfg_write
    call cfg_read
    and $0xfffffffc, %eax
    SHOW "io-moved"
    mov $NEW_Q + 16, %dx
    in %dx, %eax
    SHOW "io-at-q"
    mov %edi, %edx
    add $16, %dx
    in %dx, %eax
    SHOW "io-old-p"

    /* The expansion ROM: placed, not enabled; enable it, read it, move it, try to write it. */
    mov $DEV3, %ecx
    mov $ROM_REG, %bl
    call cfg_read
    and $0xfffff800, %eax
    jnz 1f
    PUTS32 "rom: none\n"
    jmp 2f
1:  mov %eax, %edi                   /* R */
    SHOW "rom"
    mov %edi, %eax
    or $1, %eax
    call cfg_write
    mov (%edi), %eax
    SHOW "rom-at-r"
    mov $NEW_S | 1, %eax
    call cfg_write
    call cfg_read
    and $0xfffff800, %eax
    SHOW "rom-moved"
    mov $NEW_S, %esi
    mov (%esi), %eax
    SHOW "rom-at-s"
    mov (%edi), %eax
    SHOW "rom-old-r"
    movl $0x12345678, (%esi)
    mov (%esi), %eax
    SHOW "rom-written"
    mov $NEW_S, %eax
    call cfg_write
    mov (%esi), %eax
    SHOW "rom-off"
2:
    mov $EXIT_OK, %al
    call exit32
