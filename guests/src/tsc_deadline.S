/*
 * tsc_deadline.S: the LAPIC timer's TSC-deadline mode (SDM vol. 3 11.5.4.1). Writes the LVT
 * timer with mode 2 (TSC-deadline, vector 0x33) and prints the mode that reads back ("tsc
 * deadline: lvt mode 2" when the CPU has the feature; the mode field is one bit wide without
 * it, so 0). Then writes IA32_TSC_DEADLINE (MSR 0x6e0) = TSC + ~1M cycles and reads it back:
 * a #GP prints "tsc deadline: #GP" and exits EXIT_OK; otherwise it prints "tsc deadline: msr
 * reads 0" or "... reads armed". In mode 2 it waits with sti; hlt and the handler prints "tsc
 * deadline: interrupt on vector 0x33"; in another mode it exits EXIT_OK without waiting.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"
#include "include/apic.inc"

#define TIMER_VECTOR  0x33
#define GP_VECTOR     13
#define LVT_TSC_DEADLINE (2 << 17)
#define MSR_TSC_DEADLINE 0x6e0

    PVH_NOTE _start

    .code32
    .text
timer_handler:
    PUTS32 "tsc deadline: interrupt on vector 0x33\n"
    movl $0, LAPIC_EOI
    mov $EXIT_OK, %al
    call exit32

gp_handler:
    PUTS32 "tsc deadline: #GP\n"
    mov $EXIT_OK, %al
    call exit32

    .globl _start
_start:
    START32
    mov $TIMER_VECTOR, %ecx
    mov $timer_handler, %eax
    call set_gate32
    mov $GP_VECTOR, %ecx
    mov $gp_handler, %eax
    call set_gate32
    call quiet_legacy32
    movl $(TIMER_VECTOR | LVT_TSC_DEADLINE), LAPIC_LVT_TIMER
    PUTS32 "tsc deadline: lvt mode "
    mov LAPIC_LVT_TIMER, %esi
    shr $17, %esi
    and $3, %esi
    mov %esi, %eax
    call putdec32
    call newline32
    rdtsc
    add $1000000, %eax
    adc $0, %edx
    mov $MSR_TSC_DEADLINE, %ecx
    wrmsr
    rdmsr
    or %edx, %eax
    jz 1f
    PUTS32 "tsc deadline: msr reads armed\n"
    jmp 2f
1:  PUTS32 "tsc deadline: msr reads 0\n"
2:  cmp $2, %esi
    je 3f
    mov $EXIT_OK, %al
    call exit32
3:  sti
    hlt
    cli
    PUTS32 "tsc deadline: woke up without the interrupt\n"
    mov $EXIT_FAIL, %al
    call exit32
