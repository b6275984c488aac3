/*
 * hlt.S: print "halting", then cli; hlt forever. The VMM has to sit idle
 * (idle-RSS benchmark) and still stop cleanly on SIGTERM.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

    PVH_NOTE _start

    .code32
    .text
    .globl _start
_start:
    START32
    PUTS32 "halting\n"
    jmp hang32
