/*
 * kvmcpuid.S: prints KVM's paravirtual CPUID leaves as the guest kernel sees them:
 * "kvm signature: KVMKVMKVM max 0x..." (CPUID 0x40000000) and "kvm features: 0x..."
 * (CPUID 0x40000001 EAX), or "kvm: no signature" when the hypervisor leaf is not KVM's.
 * tests/guests_boot.rs checks that rvmm hides the features that need hypercalls on hosts
 * whose KVM emulates CPL0 (an emulated vmcall never completes there).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

    PVH_NOTE _start

    .code32
    .text
    .globl _start
_start:
    START32
    mov $0x40000000, %eax
    cpuid
    cmp $0x4b4d564b, %ebx        /* "KVMK" */
    jne 1f
    cmp $0x564b4d56, %ecx        /* "VMKV" */
    jne 1f
    cmp $0x0000004d, %edx        /* "M\0\0\0" */
    jne 1f
    push %eax
    PUTS32 "kvm signature: KVMKVMKVM max "
    pop %eax
    call puthex32
    call newline32
    mov $0x40000001, %eax
    cpuid
    push %eax
    PUTS32 "kvm features: "
    pop %eax
    call puthex32
    call newline32
    mov $EXIT_OK, %al
    call exit32

1:  PUTS32 "kvm: no signature\n"
    mov $EXIT_FAIL, %al
    call exit32
