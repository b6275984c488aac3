/*
 * pci_unplug.S: PCIe native hot-unplug from the guest's side, the steps Linux's pciehp takes,
 * polled (no interrupts). On q35's ECAM: find the first bridge on bus 0 whose slot reports a
 * device present, number it bus 0x11, enable the attention button and presence detect events,
 * print "ready" and the device behind ("dev 11:00.0 vvvv:dddd"). Then wait for the attention
 * button (QMP device_del), acknowledge it ("button"), turn the power indicator and the slot's
 * power off ("powered off"), wait until the device stops answering ("gone") and print the slot
 * status ("slot sta ssss": presence detect changed and command completed, nothing present),
 * then "pci_unplug: done" and halts (the test asks QMP more and quits). Same output on QEMU
 * with native PCIe hot-plug.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define ECAM_BASE 0xb0000000
#define BUS 0x11
#define EXP_CAP 0x54
#define SLTCTL (EXP_CAP + 0x18)
#define SLTSTA (EXP_CAP + 0x1a)
#define SLTCTL_ABPE 0x0001
#define SLTCTL_PDCE 0x0008
#define SLTCTL_PIC 0x0300
#define SLTCTL_PIC_OFF 0x0300
#define SLTCTL_PCC 0x0400
#define SLTSTA_ABP 0x0001
#define SLTSTA_EVENTS 0x0019
#define SLTSTA_PDS 0x0040

    PVH_NOTE _start

    .code32
    .text
/* put16x: print %ax as 4 hex digits. */
put16x:
    push %eax
    xchg %al, %ah
    call puthex8_32
    xchg %al, %ah
    call puthex8_32
    pop %eax
    ret

    .globl _start
_start:
    START32
    call pvh_check32
    xor %ebp, %ebp                   /* devfn on bus 0 */
1:  mov %ebp, %esi
    shl $12, %esi
    or $ECAM_BASE, %esi
    cmpl $0xffffffff, (%esi)
    je 2f
    mov 8(%esi), %eax
    shr $16, %eax
    cmp $0x0604, %eax
    jne 2f
    testw $SLTSTA_PDS, SLTSTA(%esi)
    jnz found
2:  inc %ebp
    cmp $256, %ebp
    jb 1b
    PUTS32 "no populated port\n"
    mov $EXIT_FAIL, %al
    call exit32

found:
    movl $(BUS << 16 | BUS << 8), 0x18(%esi)
    mov $(ECAM_BASE | BUS << 20), %edi
    movw SLTCTL(%esi), %ax
    or $(SLTCTL_ABPE | SLTCTL_PDCE), %ax
    movw %ax, SLTCTL(%esi)
    movw $SLTSTA_EVENTS, SLTSTA(%esi)
    PUTS32 "dev 11:00.0 "
    mov (%edi), %eax
    push %eax
    shr $16, %eax
    xchg %eax, (%esp)
    call put16x
    PUTC32 ':'
    pop %eax
    call put16x
    call newline32
    PUTS32 "ready\n"
3:  testw $SLTSTA_ABP, SLTSTA(%esi)
    jz 3b
    /* Acknowledge what was seen, only that (QEMU and rvmm keep pending events when a guest
     * writes 1 to events that were not set). */
    movw $SLTSTA_ABP, SLTSTA(%esi)
    PUTS32 "button\n"
    movw SLTCTL(%esi), %ax
    or $(SLTCTL_PIC_OFF | SLTCTL_PCC), %ax
    movw %ax, SLTCTL(%esi)
    PUTS32 "powered off\n"
4:  cmpl $0xffffffff, (%edi)
    jne 4b
    PUTS32 "gone\nslot sta "
    movw SLTSTA(%esi), %ax
    call put16x
    PUTS32 "\npci_unplug: done\n"
    call hang32
