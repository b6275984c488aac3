/*
 * kbdecho.S: echoes every byte the i8042 delivers to COM1, one line each: "kbd XX" for the
 * keyboard, "aux XX" for the mouse (status bit 5). Tests type keys into a VNC client (or QMP
 * send-key) and read the scan codes back.
 *
 * It first turns on the controller's set 2 to set 1 translation (as Linux and BIOSes leave it)
 * and enables the mouse (0xD4 0xF4) and reads its ACK, then prints "ready" and polls the status port: each poll is
 * one port exit, cheap even where CPL0 is emulated. Interrupts stay off.
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define I8042_DATA   0x60
#define I8042_STATUS 0x64

    PVH_NOTE _start

    .code32
    .text
    .globl _start
_start:
    START32
    PUTS32 "kbdecho\n"
    mov $0x60, %al                    /* write the command byte: */
    out %al, $I8042_STATUS
    mov $0x47, %al                    /* translate, system flag, both port interrupts */
    out %al, $I8042_DATA
    mov $0xd4, %al                    /* next data byte to the mouse: enable reporting */
    out %al, $I8042_STATUS
    mov $0xf4, %al
    out %al, $I8042_DATA
5:  in $I8042_STATUS, %al             /* the mouse's ACK (0xFA) is read here, so that every */
    and $0x21, %al                    /* byte echoed after "ready" is one the test caused */
    cmp $0x21, %al
    je 6f
    pause
    jmp 5b
6:  in $I8042_DATA, %al
    PUTS32 "ready\n"
1:  in $I8042_STATUS, %al
    test $0x01, %al
    jnz 2f
    pause
    jmp 1b
2:  mov %al, %bl
    in $I8042_DATA, %al
    test $0x20, %bl
    jnz 3f
    PUTS32 "kbd "
    jmp 4f
3:  PUTS32 "aux "
4:  call puthex8_32
    call newline32
    jmp 1b
