#!/usr/bin/env bash
# Set up what rvmm's tests need on a fresh Debian machine of this kind, then run them.
# Usage: scripts/test.sh            (README's test command; .ci/run calls exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v iasl >/dev/null || need_apt+=(acpica-tools)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v ld >/dev/null || need_apt+=(binutils)
command -v objcopy >/dev/null || need_apt+=(binutils)
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
command -v qemu-io >/dev/null || need_apt+=(qemu-utils)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v strace >/dev/null || need_apt+=(strace)
# Firmware boot (tests/firmware.rs): SeaBIOS, and the tools that build boot CDs and GRUB ISOs.
[ -e /usr/share/seabios/bios-256k.bin ] || need_apt+=(seabios)
[ -d /usr/lib/grub/i386-pc ] || need_apt+=(grub-pc-bin)
command -v grub-mkrescue >/dev/null || need_apt+=(grub-common)
command -v xorriso >/dev/null || need_apt+=(xorriso)
command -v mformat >/dev/null || need_apt+=(mtools)
# Boot test 2's kernel (scripts/build-test-kernel.sh): the source package and its build tools.
ls /usr/src/linux-source-6.1.tar.* >/dev/null 2>&1 || need_apt+=(linux-source-6.1)
command -v make >/dev/null || need_apt+=(make)
command -v flex >/dev/null || need_apt+=(flex)
command -v bison >/dev/null || need_apt+=(bison)
command -v bc >/dev/null || need_apt+=(bc)
[ -e /usr/include/libelf.h ] || need_apt+=(libelf-dev)
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
command -v dnsmasq >/dev/null || need_apt+=(dnsmasq-base)
# -netdev user and the default NIC run passt (docs/NETWORKING.md).
command -v passt >/dev/null || need_apt+=(passt)
# tests/isolinux.rs builds a bootable ISO from Debian's ISOLINUX at test time.
[ -e /usr/lib/ISOLINUX/isolinux.bin ] || need_apt+=(isolinux)
[ -e /usr/lib/syslinux/modules/bios/poweroff.c32 ] || need_apt+=(syslinux-common)
command -v xorriso >/dev/null || need_apt+=(xorriso)
# tests/libvirt.rs: a private libvirtd probes rvmm (docs/LIBVIRT.md).
[ -x /usr/sbin/libvirtd ] || need_apt+=(libvirt-daemon-system)
command -v virsh >/dev/null || need_apt+=(libvirt-clients)
command -v unshare >/dev/null || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing ${need_apt[*]}; install them with apt-get (needs root)" >&2
    exit 1
  fi
fi
# tests/qmp.rs drives rvmm with QEMU's own Python QMP library.
command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is needed for the QMP tests" >&2; exit 1; }
python3 -c 'import qemu.qmp' 2>/dev/null || python3 -m pip install -q qemu.qmp
# tests/vnc.rs drives rvmm's VNC server with a real client, vncdotool.
python3 -c 'import vncdotool' 2>/dev/null || python3 -m pip install -q vncdotool
rustup component add clippy rustfmt >/dev/null 2>&1 || true

if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
  echo "scripts/test.sh: /dev/kvm is missing or not accessible; the guest tests need KVM" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

# Boot test 1: Debian's stock cloud kernel to "Run /init" (tests/linux_boot.rs). It is #[ignore]d
# in plain `cargo test` because it takes minutes on hosts whose KVM emulates guest kernel code
# (docs/EMULATED-KVM.md); here it runs explicitly.
# It runs while the test kernel of boot tests 2 and 3 builds (the test binary is started directly:
# `cargo test` would hold the build directory's lock), and the build waits for it to finish before
# the next boots start.
linux_dir="$(scripts/get-linux.sh)"
echo "scripts/test.sh: stock Linux boot test (several minutes where KVM emulates CPL0) with $linux_dir"
boot1_bin="$(cargo test --test linux_boot --no-run 2>&1 | sed -n 's/.*Executable tests\/linux_boot.rs (\(.*\))/\1/p')"
[ -x "$boot1_bin" ] || { echo "scripts/test.sh: cannot find the linux_boot test binary" >&2; exit 1; }
boot1_log="target/linux-boot-test.log"
RVMM_LINUX_DIR="$linux_dir" "$boot1_bin" --ignored --nocapture >"$boot1_log" 2>&1 &
boot1_pid=$!

# Boot test 2: a small kernel built from linux-source-6.1 proves virtio-blk, -rng and -net from
# inside Linux without user space (tests/linux_devices.rs, docs/LINUX-TEST-KERNEL.md). Building
# it takes about 3 minutes on 2 cores the first time (cached by config hash), the boot seconds.
test_kernel="$(scripts/build-test-kernel.sh)"
boot1_status=0
wait "$boot1_pid" || boot1_status=$?
cat "$boot1_log"
if [ "$boot1_status" -ne 0 ]; then
  echo "scripts/test.sh: stock Linux boot test failed (status $boot1_status)" >&2
  exit 1
fi
echo "scripts/test.sh: Linux device test with $test_kernel"
RVMM_TEST_KERNEL="$test_kernel" cargo test --test linux_devices -- --ignored --nocapture
# The same kernel on q35 and pc with only virtio-pci devices and virtio-net-pci on -nic user
# (passt): DHCP, netconsole to 10.0.2.2 (restrict=on on pc: none), a hostfwd=udp echo, the link
# going down when passt is killed, the ext4 root mounted rw (tests/usernet.rs, docs/NETWORKING.md).
echo "scripts/test.sh: user networking test with $test_kernel"
RVMM_TEST_KERNEL="$test_kernel" cargo test --test usernet -- --ignored --nocapture

# The same kernel saved while it waits for its root device and restored by a new rvmm
# (tests/linux_snapshot.rs, docs/SNAPSHOT.md): about a minute where KVM emulates CPL0.
RVMM_TEST_KERNEL="$test_kernel" cargo test --test linux_snapshot -- --ignored --nocapture

# Boot test 3: SeaBIOS boots a GRUB CD (made at test time), GRUB boots the same kernel, and its
# self test finds the CD through ahci (q35) / ata_piix (pc) + sr and mounts it as iso9660, and
# writes the -hda qcow2 through sd (tests/linux_firmware.rs). pc and q35 boot in parallel; several
# minutes where KVM emulates CPL0 (firmware, GRUB and the kernel's decompressor all run there).
echo "scripts/test.sh: firmware Linux test (SeaBIOS, GRUB CD, onboard ATA) with $test_kernel"
# On a loaded host whose KVM emulates CPL0 the test kernel's early periodic tick can fall behind
# for good (docs/LINUX-TEST-KERNEL.md, "Boot test 3"): one retry, announced, for that host
# timing problem; a second failure fails the run.
if ! RVMM_TEST_KERNEL="$test_kernel" cargo test --test linux_firmware -- --ignored --nocapture; then
  echo "scripts/test.sh: boot test 3 failed once; retrying it (see docs/LINUX-TEST-KERNEL.md)" >&2
  RVMM_TEST_KERNEL="$test_kernel" cargo test --test linux_firmware -- --ignored --nocapture
fi
