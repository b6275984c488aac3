/*
 * fwcfg.S: QEMU fw_cfg through both interfaces (PVH, ELF32).
 *
 * Traditional (ports 0x510/0x511): prints "fw_cfg: N vCPUs, M MiB RAM, id 0xF".
 * DMA (port 0x514, needs ID bit 1): reads the file directory, looks up
 * "opt/rvmm/test" and prints "dma: opt/rvmm/test size S: <contents>", then
 * reads the same file again through the data port: "pio: <contents>" (at most
 * 64 bytes each). EXIT_OK, or EXIT_FAIL with a reason ("dma: error",
 * "file not found", no DMA bit).
 */
#include "include/lib32.inc"
#include "include/pvh.inc"

#define FW_CFG_ID           0x0001
#define FW_CFG_MAX_CPUS     0x000f
#define FW_CFG_FILE_DIR     0x0019
#define FW_CFG_DMA_HIGH     0x514
#define FW_CFG_DMA_LOW      0x518
#define DMA_CTL_ERROR       0x01
#define DMA_CTL_READ        0x02
#define DMA_CTL_SELECT      0x08
#define MAX_FILES           32
#define DIR_ENTRY           64
#define SHOWN               64

    PVH_NOTE _start

    .section .rodata
file_name: .asciz "opt/rvmm/test"

    .bss
    .balign 16
dma_desc: .skip 16
dir:      .skip 4 + MAX_FILES * DIR_ENTRY
content:  .skip SHOWN + 1
file_sel:  .long 0
file_size: .long 0

    .code32
    .text
    .globl _start
_start:
    START32
    call pvh_check32

    mov $FW_CFG_NB_CPUS, %ax
    call fwcfg_select32
    mov $2, %ecx
    call fwcfg_read32
    mov %eax, %edi
    mov $FW_CFG_RAM_SIZE, %ax
    call fwcfg_select32
    mov $4, %ecx
    call fwcfg_read32
    mov %eax, %ebx
    call fwcfg_read32
    shrd $20, %eax, %ebx
    PUTS32 "fw_cfg: "
    mov %edi, %eax
    call putdec32
    PUTS32 " vCPUs, "
    mov %ebx, %eax
    call putdec32
    PUTS32 " MiB RAM, id "
    mov $FW_CFG_ID, %ax
    call fwcfg_select32
    mov $4, %ecx
    call fwcfg_read32
    mov %eax, %ebx
    call puthex32
    call newline32
    test $2, %bl
    jnz 1f
    PUTS32 "fw_cfg: no DMA interface\n"
    jmp fail

    /* The directory count, then the entries, both through DMA. */
1:  mov $((FW_CFG_FILE_DIR << 16) | DMA_CTL_SELECT | DMA_CTL_READ), %eax
    mov $4, %ecx
    mov $dir, %edx
    call dma32
    mov dir, %ecx
    bswap %ecx
    cmp $MAX_FILES, %ecx
    jbe 2f
    mov $MAX_FILES, %ecx
2:  push %ecx
    shl $6, %ecx
    mov $DMA_CTL_READ, %eax
    mov $dir + 4, %edx
    call dma32
    pop %ecx

    /* Find the file: names are at offset 8 of each 64-byte entry. */
    mov $dir + 4, %ebx
3:  test %ecx, %ecx
    jz notfound
    lea 8(%ebx), %esi
    mov $file_name, %edi
4:  mov (%edi), %al
    cmp (%esi), %al
    jne 5f
    test %al, %al
    jz found
    inc %esi
    inc %edi
    jmp 4b
5:  add $DIR_ENTRY, %ebx
    dec %ecx
    jmp 3b

found:
    mov (%ebx), %eax
    bswap %eax
    mov %eax, file_size
    movzwl 4(%ebx), %eax
    xchg %al, %ah
    mov %eax, file_sel
    PUTS32 "dma: opt/rvmm/test size "
    mov file_size, %eax
    call putdec32
    PUTS32 ": "
    mov file_sel, %eax
    shl $16, %eax
    or $(DMA_CTL_SELECT | DMA_CTL_READ), %eax
    call shown_len
    mov $content, %edx
    call dma32
    mov $content, %esi
    call putsn32
    call newline32

    /* Again through the data port. */
    mov file_sel, %eax
    call fwcfg_select32
    call shown_len
    mov $content, %edi
    mov $FW_CFG_PORT_DATA, %dx
    rep insb
    PUTS32 "pio: "
    mov $content, %esi
    call shown_len
    call putsn32
    call newline32
    mov $EXIT_OK, %al
    call exit32

notfound:
    PUTS32 "fw_cfg: opt/rvmm/test not found\n"
fail:
    mov $EXIT_FAIL, %al
    call exit32

/* shown_len: %ecx = min(file_size, SHOWN). */
shown_len:
    mov file_size, %ecx
    cmp $SHOWN, %ecx
    jbe 1f
    mov $SHOWN, %ecx
1:  ret

/* dma32: run one fw_cfg DMA transfer: control %eax, length %ecx, target %edx.
 * Fails the guest if the device reports an error. */
dma32:
    push %eax
    push %edx
    bswap %eax
    mov %eax, dma_desc
    bswap %ecx
    mov %ecx, dma_desc + 4
    bswap %ecx
    movl $0, dma_desc + 8
    bswap %edx
    mov %edx, dma_desc + 12
    /* Address register: high half first, the low half starts the transfer. */
    xor %eax, %eax
    mov $FW_CFG_DMA_HIGH, %dx
    out %eax, %dx
    mov $dma_desc, %eax
    bswap %eax
    mov $FW_CFG_DMA_LOW, %dx
    out %eax, %dx
    mov dma_desc, %eax
    test %eax, %eax
    jz 1f
    PUTS32 "dma: error "
    bswap %eax
    call puthex32
    call newline32
    jmp fail
1:  pop %edx
    pop %eax
    ret
