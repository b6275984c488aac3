/*
 * pci_tree.S: walk q35's PCI bus tree through ECAM (0xb0000000) as firmware would. Every
 * bridge (class 06.04) on bus 0 gets bus number 0x11, 0x12, ... (not what firmware chose, so
 * config cycles must follow the guest's numbering); its header is put in a known state (decode
 * off, BAR0 0, windows closed, interrupt line and bridge control 0) and its configuration space
 * is printed ("bridge 00:DD.F vvvv:dddd bus NN", then "cfg OOO: 8 hex digits x4" for
 * 0x000-0x08f and 0x100-0x14f). A Slot Control write must complete a command (Slot Status CC),
 * which is write-1-to-clear ("slot ctl cccc sta ssss" after each step). Then bus NN is scanned
 * ("dev NN:DD.0 vvvv:dddd class cccccc caps c1 c2 ...", then its bytes 0x40-0x8f: a PCIe
 * endpoint's capabilities), and the numbers firmware used are
 * checked to be gone ("old bus 01: ffffffff"). Exits EXIT_OK (33). Same output on QEMU.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define ECAM_BASE 0xb0000000
#define FIRST_BUS 0x11
/* The PCI Express capability of QEMU's generic root port, and its slot registers. */
#define EXP_CAP 0x54
#define SLTCTL (EXP_CAP + 0x18)
#define SLTSTA (EXP_CAP + 0x1a)
#define SLTCTL_CCIE 0x10
#define SLTSTA_CC 0x10

    PVH_NOTE _start

    .code32
    .text
/* put32x: print %eax as 8 hex digits. */
put32x:
    push %eax
    rol $8, %eax
    call puthex8_32
    rol $8, %eax
    call puthex8_32
    rol $8, %eax
    call puthex8_32
    rol $8, %eax
    call puthex8_32
    pop %eax
    ret

/* put16x: print %ax as 4 hex digits. */
put16x:
    push %eax
    xchg %al, %ah
    call puthex8_32
    xchg %al, %ah
    call puthex8_32
    pop %eax
    ret

/* dump: print config space of the function at %esi from offset %ecx to %edx (16-byte rows). */
dump:
    push %eax
    push %ebx
    push %ecx
1:  PUTS32 "cfg "
    mov %ecx, %eax
    shr $8, %eax
    call puthex4_32
    mov %cl, %al
    call puthex8_32
    PUTC32 ':'
    mov $4, %ebx
2:  PUTC32 ' '
    mov (%esi,%ecx), %eax
    call put32x
    add $4, %ecx
    dec %ebx
    jnz 2b
    call newline32
    cmp %edx, %ecx
    jb 1b
    pop %ecx
    pop %ebx
    pop %eax
    ret

/* slot: print "slot ctl cccc sta ssss" of the port at %esi. */
slot:
    push %eax
    PUTS32 "slot ctl "
    movw SLTCTL(%esi), %ax
    call put16x
    PUTS32 " sta "
    movw SLTSTA(%esi), %ax
    call put16x
    call newline32
    pop %eax
    ret

/* scan: print every function 0 on bus %bl (caps list too). */
scan:
    push %eax
    push %ecx
    push %esi
    xor %ecx, %ecx
1:  movzbl %bl, %esi
    shl $20, %esi
    mov %ecx, %eax
    shl $15, %eax
    or %eax, %esi
    or $ECAM_BASE, %esi
    mov (%esi), %eax
    cmp $0xffffffff, %eax
    je 3f
    PUTS32 "dev "
    push %eax
    mov %bl, %al
    call puthex8_32
    PUTC32 ':'
    mov %cl, %al
    call puthex8_32
    PUTS32 ".0 "
    pop %eax
    push %eax
    shr $16, %eax
    xchg %eax, (%esp)
    call put16x
    PUTC32 ':'
    pop %eax
    call put16x
    PUTS32 " class "
    mov 8(%esi), %eax
    shr $8, %eax
    push %eax
    shr $16, %eax
    call puthex8_32
    pop %eax
    call put16x
    PUTS32 " caps"
    movzbl 0x34(%esi), %eax
2:  and $0xfc, %eax
    jz 4f
    PUTC32 ' '
    push %eax
    mov (%esi,%eax), %al
    call puthex8_32
    pop %eax
    movzbl 1(%esi,%eax), %eax
    jmp 2b
4:  call newline32
    push %ecx
    push %edx
    mov $0x40, %ecx
    mov $0x90, %edx
    call dump
    pop %edx
    pop %ecx
3:  inc %ecx
    cmp $32, %ecx
    jb 1b
    pop %esi
    pop %ecx
    pop %eax
    ret

    .globl _start
_start:
    START32
    call pvh_check32
    mov $FIRST_BUS, %bl              /* next bus number */
    xor %ebp, %ebp                   /* devfn on bus 0 */
next_function:
    mov %ebp, %esi
    shl $12, %esi
    or $ECAM_BASE, %esi
    mov (%esi), %eax
    cmp $0xffffffff, %eax
    je skip
    mov 8(%esi), %edx
    shr $16, %edx
    cmp $0x0604, %edx
    jne skip
    /* A bridge: number it (primary 0, secondary = subordinate = %bl). */
    movzbl %bl, %edx
    mov %edx, %ecx
    shl $8, %edx
    shl $16, %ecx
    or %ecx, %edx
    mov %edx, 0x18(%esi)
    PUTS32 "bridge 00:"
    push %eax
    mov %ebp, %eax
    shr $3, %eax
    call puthex8_32
    PUTC32 '.'
    mov %ebp, %eax
    and $7, %eax
    call puthex4_32
    PUTC32 ' '
    mov (%esp), %eax
    shr $16, %eax
    xchg %eax, (%esp)
    call put16x
    PUTC32 ':'
    pop %eax
    call put16x
    PUTS32 " bus "
    mov %bl, %al
    call puthex8_32
    call newline32
    /* Known state: decode off, BAR0 0, windows closed, int line and bridge control 0. */
    movw $0, 0x04(%esi)
    movl $0, 0x10(%esi)
    movw $0x00f0, 0x1c(%esi)
    movl $0x0000fff0, 0x20(%esi)
    movl $0x0000fff0, 0x24(%esi)
    movl $0, 0x28(%esi)
    movl $0, 0x2c(%esi)
    movl $0, 0x30(%esi)
    movb $0, 0x3c(%esi)
    movw $0, 0x3e(%esi)
    xor %ecx, %ecx
    mov $0x90, %edx
    call dump
    mov $0x100, %ecx
    mov $0x150, %edx
    call dump
    /* Slot: a Slot Control write completes a command; CC is write-1-to-clear. */
    call slot
    movw SLTCTL(%esi), %ax
    or $SLTCTL_CCIE, %ax
    movw %ax, SLTCTL(%esi)
    call slot
    movw $SLTSTA_CC, SLTSTA(%esi)
    call slot
    call scan
    inc %bl
skip:
    inc %ebp
    cmp $256, %ebp
    jb next_function
    /* The numbers firmware gave the bridges (from 1) now reach nothing. */
    PUTS32 "old bus 01: "
    mov ECAM_BASE + (1 << 20), %eax
    call put32x
    call newline32
    PUTS32 "pci_tree: done\n"
    mov $EXIT_OK, %al
    call exit32
