/*
 * xhci.S: drives the first qemu-xhci (1b36:000d) on PCI bus 0 as a polling driver would, with
 * no USB device behind it (xHCI 1.2 4.2 "Host Controller Initialization"), printing what it
 * reads, one line each, so that rvmm's and QEMU's outputs can be compared:
 *   "xhci: caps 0x... hcsparams1 0x... hccparams1 0x..."  (CAPLENGTH/HCIVERSION, ports,
 *   interrupters, slots), "xhci: port N portsc 0x..." for each root port, HCRST (then it waits
 *   for HCRST and CNR to clear): "xhci: reset, usbsts 0x...", the command ring, DCBAA and one
 *   event ring segment of 16 TRBs on interrupter 0, Run: "xhci: running, usbsts 0x...".
 * Then six commands, doorbell 0, and one line per completion event polled from the event ring:
 *   "xhci: event type T cc C slot S trb N" (N: the command's index on the ring) for No Op,
 *   Enable Slot twice, Disable Slot 1, Disable Slot 9 (not enabled) and Address Device on slot
 *   2 (no device: TRB Error); a Link TRB with Toggle Cycle back to the start makes a second No
 *   Op (cycle bit 0) run after ERDP moved: one more event line. With `wait` on the command
 *   line it prints "xhci: waiting" after Run and waits for a byte on COM1 before the commands
 *   (tests/xhci.rs snapshots the controller there). Stop: "xhci: halted, usbsts
 *   0x...", "xhci: done", EXIT_OK. Events are polled; with `msix` on the command line the first
 * one arrives by interrupt instead: MSI-X entry 0 -> vector 0x30 on APIC 0, MSI-X Enable,
 * IMAN.IE and USBCMD.INTE, then `sti; hlt` until the handler prints "xhci: interrupt on vector
 * 0x30, iman 0x3" (IP set again: the later completions came while EHB held them back, so
 * no message went out for them). "xhci: FAIL ..." and
 * EXIT_FAIL on a missing controller or an event that never comes.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/pci.inc"
#include "include/apic.inc"

#define DCBAA   0x220000
#define ERST    0x221000
#define EVT     0x222000
#define CMD     0x223000
#define ICTX    0x224000
#define TRB_NOOP        (23 << 10)
#define TRB_ENABLE_SLOT (9 << 10)
#define TRB_DISABLE     (10 << 10)
#define TRB_ADDRESS     (11 << 10)
#define TRB_LINK        (6 << 10)
#define SPIN            2000000
#define IRQ_VECTOR      0x30
#define CMDLINE_MAX     256

    PVH_NOTE _start

    .section .bss
    .balign 4
base:       .skip 4      /* BAR 0 */
oper:       .skip 4
ir0:        .skip 4      /* interrupter 0's registers */
db:         .skip 4      /* doorbell array */
nports:     .skip 4
evidx:      .skip 4      /* next event ring entry */
msix:       .skip 4      /* 1: the first event by MSI-X */
slot:       .skip 4

    .section .rodata
k_msix:     .asciz "msix"
k_wait:     .asciz "wait"

    .text
    .code32
    .globl _start
_start:
    START32
    call pvh_check32
    movl $0, msix
    call pvh_cmdline32
    test %esi, %esi
    jz 0f
    mov $k_msix, %edi
    mov $CMDLINE_MAX, %ecx
    call find32
    jne 0f
    movl $1, msix
    mov $IRQ_VECTOR, %ecx
    mov $irq_handler, %eax
    call set_gate32
    call quiet_legacy32
0:  PUTS32 "xhci\n"
    /* Find 1b36:000d. */
    xor %ecx, %ecx
1:  mov $0, %bl
    call cfg_read
    cmp $0x000d1b36, %eax
    je 2f
    inc %ecx
    cmp $32, %ecx
    jb 1b
    PUTS32 "xhci: FAIL no qemu-xhci\n"
    jmp fail
2:  mov %ecx, slot
    mov $0x14, %bl                  /* BAR 0's upper half */
    call cfg_read
    test %eax, %eax
    jz 3f
    PUTS32 "xhci: FAIL BAR 0 above 4 GiB\n"
    jmp fail
3:  mov $0x10, %bl
    call cfg_read
    and $0xfffffff0, %eax
    mov %eax, base
    mov $0x04, %bl
    call cfg_read
    or $0x6, %eax                   /* memory space, bus master */
    and $0xffff, %eax
    call cfg_write
    /* Capabilities. */
    mov base, %esi
    PUTS32 "xhci: caps "
    mov (%esi), %eax
    call puthex32
    PUTS32 " hcsparams1 "
    mov 4(%esi), %eax
    call puthex32
    shr $24, %eax
    mov %eax, nports
    PUTS32 " hccparams1 "
    mov 0x10(%esi), %eax
    call puthex32
    call newline32
    movzbl (%esi), %eax             /* CAPLENGTH */
    add %esi, %eax
    mov %eax, oper
    mov 0x18(%esi), %eax            /* RTSOFF */
    add %esi, %eax
    add $0x20, %eax
    mov %eax, ir0
    mov 0x14(%esi), %eax            /* DBOFF */
    add %esi, %eax
    mov %eax, db
    /* Root ports. */
    mov oper, %edi
    xor %ecx, %ecx
4:  cmp nports, %ecx
    jae 5f
    PUTS32 "xhci: port "
    lea 1(%ecx), %eax
    call putdec32
    PUTS32 " portsc "
    mov %ecx, %edx
    shl $4, %edx
    mov 0x400(%edi,%edx), %eax
    call puthex32
    call newline32
    inc %ecx
    jmp 4b
    /* HCRST; wait for it and CNR to clear. */
5:  movl $2, (%edi)
    mov $SPIN, %ecx
6:  testl $2, (%edi)
    jnz 7f
    testl $0x800, 4(%edi)
    jz 8f
7:  loop 6b
    PUTS32 "xhci: FAIL reset never ended\n"
    jmp fail
8:  PUTS32 "xhci: reset, usbsts "
    mov 4(%edi), %eax
    call puthex32
    call newline32
    /* Zero the DCBAA's first entries and the event ring. */
    xor %eax, %eax
    mov $64, %ecx
    mov $EVT, %edx
9:  mov %eax, (%edx)
    mov %eax, DCBAA-EVT(%edx)
    add $4, %edx
    loop 9b
    /* CONFIG: 64 slots; DCBAAP; CRCR with RCS = 1. */
    movl $64, 0x38(%edi)
    movl $DCBAA, 0x30(%edi)
    movl $0, 0x34(%edi)
    movl $(CMD | 1), 0x18(%edi)
    movl $0, 0x1c(%edi)
    /* One segment of 16 TRBs. */
    movl $EVT, ERST
    movl $0, ERST+4
    movl $16, ERST+8
    movl $0, ERST+12
    mov ir0, %ebx
    movl $1, 8(%ebx)                /* ERSTSZ */
    movl $EVT, 0x18(%ebx)           /* ERDP */
    movl $0, 0x1c(%ebx)
    movl $ERST, 0x10(%ebx)          /* ERSTBA: the high half latches it */
    movl $0, 0x14(%ebx)
    cmpl $0, msix
    je 13f
    call enable_msix
    movl $2, (%ebx)                 /* IMAN.IE */
    movl $5, (%edi)                 /* Run, INTE */
    jmp 14f
13: movl $1, (%edi)                 /* Run */
14:
    PUTS32 "xhci: running, usbsts "
    mov 4(%edi), %eax
    call puthex32
    call newline32
    call pvh_cmdline32
    test %esi, %esi
    jz 17f
    push %edi
    mov $k_wait, %edi
    mov $CMDLINE_MAX, %ecx
    call find32
    pop %edi
    jne 17f
    PUTS32 "xhci: waiting\n"
    mov $(COM1_THR + 5), %dx            /* LSR: bit 0 = data ready */
18: in %dx, %al
    test $1, %al
    jz 18b
17:
    /* The commands: TRB n at CMD + 16 n, cycle bit 1. */
    mov $CMD, %edx
    xor %eax, %eax
    mov $TRB_NOOP | 1, %ecx
    call put_trb
    mov $TRB_ENABLE_SLOT | 1, %ecx
    call put_trb
    call put_trb
    mov $TRB_DISABLE | (1 << 24) | 1, %ecx
    call put_trb
    mov $TRB_DISABLE | (9 << 24) | 1, %ecx
    call put_trb
    mov $ICTX, %eax
    mov $TRB_ADDRESS | (2 << 24) | 1, %ecx
    call put_trb
    mov $CMD, %eax
    mov $TRB_LINK | 2 | 1, %ecx     /* Toggle Cycle */
    call put_trb
    mov db, %ebx
    movl $0, (%ebx)                 /* doorbell 0, target 0: the command ring */
    movl $0, evidx
    cmpl $0, msix
    je 15f
    movl $15f, irq_resume
    sti
16: hlt                             /* sti's shadow covers hlt: no wake-up is lost */
    jmp 16b
15: mov $6, %ecx
10: call next_event
    loop 10b
    /* Consume them: ERDP past the six, EHB cleared. */
    mov ir0, %ebx
    movl $(EVT + 6 * 16) | 8, 0x18(%ebx)
    /* After the link the ring's cycle is 0: a No Op with C = 0 at the start. */
    mov $CMD, %edx
    xor %eax, %eax
    mov $TRB_NOOP, %ecx
    call put_trb
    mov db, %ebx
    movl $0, (%ebx)
    call next_event
    /* Stop. */
    movl $0, (%edi)
    mov $SPIN, %ecx
11: testl $1, 4(%edi)
    jnz 12f
    loop 11b
12: PUTS32 "xhci: halted, usbsts "
    mov 4(%edi), %eax
    call puthex32
    call newline32
    PUTS32 "xhci: done\n"
    mov $EXIT_OK, %eax
    jmp exit32

/* enable_msix: table entry 0 -> vector IRQ_VECTOR on APIC 0, unmasked; MSI-X Enable in the
 * capability (found on the capability list). */
enable_msix:
    push %eax
    push %ebx
    push %ecx
    push %esi
    mov base, %esi
    movl $LAPIC_BASE, 0x3000(%esi)
    movl $0, 0x3004(%esi)
    movl $IRQ_VECTOR, 0x3008(%esi)
    movl $0, 0x300c(%esi)
    mov slot, %ecx
    mov $0x34, %bl
    call cfg_read
    and $0xfc, %eax
1:  test %eax, %eax
    jz 3f
    mov %al, %bl
    call cfg_read
    cmp $0x11, %al                  /* MSI-X */
    je 2f
    shr $8, %eax
    and $0xfc, %eax
    jmp 1b
2:  or $0x80000000, %eax            /* Message Control: Enable */
    call cfg_write
    pop %esi
    pop %ecx
    pop %ebx
    pop %eax
    ret
3:  PUTS32 "xhci: FAIL no MSI-X capability\n"
    jmp fail

/* The interrupt: print IMAN, EOI, continue at irq_resume with interrupts off (the frame is
 * dropped: this CPL0 code cannot use iret on this host). */
irq_handler:
    add $12, %esp
    movl $0, LAPIC_EOI
    PUTS32 "xhci: interrupt on vector 0x30, iman "
    mov ir0, %eax
    mov (%eax), %eax
    call puthex32
    call newline32
    jmp *irq_resume

    .section .bss
irq_resume: .skip 4
    .text

/* put_trb: TRB at %edx = {parameter %eax (low; high 0), status 0, control %ecx}; %edx += 16. */
put_trb:
    mov %eax, (%edx)
    movl $0, 4(%edx)
    movl $0, 8(%edx)
    mov %ecx, 12(%edx)
    add $16, %edx
    ret

/* next_event: wait for event ring entry evidx (cycle 1) and print it. */
next_event:
    push %eax
    push %ecx
    push %edx
    mov evidx, %edx
    shl $4, %edx
    add $EVT, %edx
    mov $SPIN, %ecx
1:  testl $1, 12(%edx)
    jnz 2f
    loop 1b
    PUTS32 "xhci: FAIL no event "
    mov evidx, %eax
    call putdec32
    call newline32
    jmp fail
2:  PUTS32 "xhci: event type "
    mov 12(%edx), %eax
    shr $10, %eax
    and $0x3f, %eax
    call putdec32
    PUTS32 " cc "
    movzbl 11(%edx), %eax
    call putdec32
    PUTS32 " slot "
    movzbl 15(%edx), %eax
    call putdec32
    PUTS32 " trb "
    mov (%edx), %eax
    sub $CMD, %eax
    shr $4, %eax
    call putdec32
    call newline32
    incl evidx
    pop %edx
    pop %ecx
    pop %eax
    ret

fail:
    mov $EXIT_FAIL, %eax
    jmp exit32
