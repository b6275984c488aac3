#!/bin/busybox sh
# Boot test 2's user-space checks (tests/linux_devices.rs puts this script at /init on the ext4
# root, with a static busybox at /bin/busybox). They are what a user would check by hand: the
# CPUs, a disk write the host finds with qemu-io, /dev/hwrng, and a ping of the host. Where KVM
# emulates guest kernel code (docs/EMULATED-KVM.md) user space cannot make system calls, so this
# never runs there and the test says so; on a normal KVM host (or QEMU TCG) it does.
bb=/bin/busybox
$bb mount -t proc proc /proc
echo "rvmm-guest: user space up"
echo "rvmm-guest: cpus=$($bb grep -c ^processor /proc/cpuinfo)"
# 512 bytes of 'U' (0x55) into sector 4 of /dev/vda, synced: the host reads them with qemu-io.
if $bb yes U | $bb tr -d '\n' | $bb head -c 512 |
  $bb dd of=/dev/vda bs=512 seek=4 count=1 iflag=fullblock conv=fsync 2>/dev/null; then
  echo "rvmm-guest: disk write done"
fi
echo "rvmm-guest: hwrng=$($bb dd if=/dev/hwrng bs=32 count=1 2>/dev/null | $bb od -An -tx1 | $bb tr -d ' \n')"
if $bb ping -c 1 -W 5 10.0.2.1 >/dev/null 2>&1; then
  echo "rvmm-guest: ping ok"
else
  echo "rvmm-guest: ping failed"
fi
echo "rvmm-guest: checks done"
$bb sync
$bb reboot -f
