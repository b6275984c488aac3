/*
 * smp.S: the bootstrap processor prints "smp bsp" and halts; the other
 * vCPUs are never started (they wait for INIT/SIPI). Used to check that the
 * VMM created one thread per vCPU.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

    PVH_NOTE _start

    .code32
    .text
    .globl _start
_start:
    START32
    PUTS32 "smp bsp\n"
    jmp hang32
