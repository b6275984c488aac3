#!/usr/bin/env python3
"""Linux boot time: rvmm on KVM next to QEMU, on the same kernel, initrd, disks and command line.

Each run boots the kernel in every VMM configuration in alternating order (these machines are
noisy: compare within one run) and records the wall time from exec to each milestone line on the
serial console, then to the VMM's exit (the guest panics or restarts; -no-reboot ends the VMM).

  rvmm        rvmm, -accel kvm
  qemu-tcg    QEMU, -accel tcg -cpu max (translates guest code; runs anywhere)
  qemu-kvm    QEMU, -accel kvm -cpu host (only with --qemu-kvm: on a host whose KVM emulates
              guest kernel code it stops at the first instruction KVM cannot emulate; the run
              records how far it got and why it ended)

Two presets:
  --stock         Debian's cloud kernel and busybox initrd from scripts/get-linux.sh
                  (boot test 1's command line, -smp 2 -m 128, q35; --baseline: without its
                  time-saving parameters, -m 512)
  --test-kernel   the kernel of scripts/build-test-kernel.sh (boot test 2's, microvm,acpi=off,
                  -smp 2 -m 128) with its rng, a raw disk and the ext4 root holding
                  guests/linux/init.sh; no network (its self test reports net FAIL at once and
                  the boot goes on); rodata=off as in tests/linux_devices.rs (not with --baseline)

Usage: benches/linux_boot.py (--stock | --test-kernel) [--runs N] [--rvmm PATH] [--qemu PATH]
                             [--qemu-kvm] [--append-extra "..."] [-m MiB]
"""

import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMULATED_KVM = "noxsave clearcpuid=141,308,137 cryptomgr.notests reboot=k panic=-1"
# tests/linux_boot.rs FAST_BOOT_CMDLINE (docs/EMULATED-KVM.md): only saves boot time.
FAST_BOOT = ("nowatchdog mitigations=off rodata=off initcall_blacklist=ftrace_check_for_weak_functions,"
             "trace_eval_init,tracer_init_tracefs,blake2s_mod_init,cubictcp_register,bpf_rstat_kfunc_init,"
             "bpf_key_sig_kfuncs_init,kfunc_init,bpf_prog_test_run_init,bpf_tcp_ca_kfunc_init")
COMMON = ["-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio"]


def run_script(name):
    out = subprocess.run([os.path.join(ROOT, "scripts", name)], check=True, stdout=subprocess.PIPE,
                         text=True)
    return out.stdout.strip()


def stock(args, work):
    d = run_script("get-linux.sh")
    mem = args.m or (512 if args.baseline else 128)
    vm = ["-M", "q35", "-smp", "2", "-m", str(mem), "-kernel", os.path.join(d, "vmlinuz"),
          "-initrd", os.path.join(d, "initrd.img")]
    fast = "" if args.baseline else FAST_BOOT
    cmdline = f"console=ttyS0 {EMULATED_KVM} {fast} {args.append_extra}".strip()
    milestones = ["Linux version", "smp: Brought up", "Freeing unused kernel image", "Run /init as init process"]
    return vm, cmdline, milestones, []


def test_kernel(args, work):
    kernel = run_script("build-test-kernel.sh")
    busybox = os.path.join(run_script("get-linux.sh"), "busybox")
    tree = os.path.join(work, "rootfs")
    for sub in ("bin", "dev", "proc", "sys"):
        os.makedirs(os.path.join(tree, sub))
    shutil.copy(os.path.join(ROOT, "guests", "linux", "init.sh"), os.path.join(tree, "init"))
    shutil.copy(busybox, os.path.join(tree, "bin", "busybox"))
    # Pristine copies: every boot gets fresh images (a boot leaves the ext4 root unclean).
    root = os.path.join(work, "root.raw")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", tree, root + ".pristine", "16M"], check=True)
    disk = os.path.join(work, "disk.raw")
    with open(disk + ".pristine", "wb") as f:
        f.truncate(1 << 20)
    vm = ["-M", "microvm,acpi=off", "-smp", "2", "-m", str(args.m or 128), "-kernel", kernel,
          "-object", "rng-random,id=r0,filename=/dev/urandom", "-device", "virtio-rng-device,rng=r0",
          "-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-device,drive=d0",
          "-drive", f"file={root},format=raw,if=none,id=d1", "-device", "virtio-blk-device,drive=d1"]
    rodata = "" if args.baseline else "rodata=off "
    cmdline = (f"console=ttyS0 {EMULATED_KVM} {rodata}rvmm_selftest.restart=0 root=/dev/vdb rw "
               f"rootfstype=ext4 init=/init {args.append_extra}").strip()
    milestones = ["Linux version", "smp: Brought up", "rvmm-selftest: rng", "Run /init as init process"]
    return vm, cmdline, milestones, [root, disk]


def boot(argv, milestones, timeout):
    """Wall seconds from exec to each milestone (None if never seen), to exit, and the status."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen = {}
    buf = b""
    err = b""
    fds = [proc.stdout.fileno(), proc.stderr.fileno()]
    deadline = start + timeout
    while fds:
        left = deadline - time.perf_counter()
        if left <= 0:
            proc.kill()
            break
        r, _, _ = select.select(fds, [], [], left)
        for fd in r:
            chunk = os.read(fd, 65536)
            if not chunk:
                fds.remove(fd)
            elif fd == proc.stdout.fileno():
                buf += chunk
                now = time.perf_counter() - start
                for m in milestones:
                    if m not in seen and m.encode() in buf:
                        seen[m] = now
            else:
                err += chunk
                # QEMU pauses the guest after a KVM emulation failure and waits forever.
                if b"emulation failure" in err:
                    proc.kill()
                    fds = []
                    break
    status = proc.wait()
    end = time.perf_counter() - start
    return seen, end, status, buf.decode(errors="replace"), err.decode(errors="replace")


def main():
    ap = argparse.ArgumentParser()
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--stock", action="store_true")
    which.add_argument("--test-kernel", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rvmm", default=os.path.join(ROOT, "target", "release", "rvmm"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--qemu-kvm", action="store_true", help="also run QEMU with -accel kvm")
    ap.add_argument("--append-extra", default="", help="more kernel parameters for every VMM")
    ap.add_argument("-m", type=int, default=None, help="guest RAM in MiB (default: the preset's)")
    ap.add_argument("--baseline", action="store_true",
                    help="without the boot tests' time-saving parameters (--stock: also -m 512)")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rvmm-linux-boot-")
    try:
        vm, cmdline, milestones, images = (stock if args.stock else test_kernel)(args, work)
        configs = {
            "rvmm": [args.rvmm, "-accel", "kvm", "-cpu", "host"],
            "qemu-tcg": [args.qemu, "-accel", "tcg", "-cpu", "max"],
        }
        if args.qemu_kvm:
            configs["qemu-kvm"] = [args.qemu, "-accel", "kvm", "-cpu", "host"]
        res = {k: [] for k in configs}
        for i in range(args.runs):
            order = list(configs) if i % 2 == 0 else list(reversed(list(configs)))
            for name in order:
                cmdl = cmdline.replace("reboot=k", "reboot=t") if name.startswith("qemu") else cmdline
                argv = configs[name] + COMMON + vm + ["-append", cmdl]
                for img in images:
                    shutil.copy(img + ".pristine", img)
                seen, end, status, out, err = boot(argv, milestones, args.timeout)
                res[name].append((seen, end, status, out, err))
                got = ", ".join(f"{m!r} {t:.1f}" for m, t in seen.items())
                print(f"run {i} {name}: exit {end:.1f} s (status {status}); {got}", file=sys.stderr)
        print(f"command: VMM -accel ... {' '.join(COMMON + vm)} -append \"{cmdline}\"")
        print("(QEMU gets reboot=t instead of reboot=k: QEMU's microvm has no i8042)")
        print(f"runs: {args.runs} alternating")
        print()
        names = list(configs)
        print("| milestone (median wall s from exec) | " + " | ".join(names) + " | rvmm/qemu-tcg |")
        print("|---" * (len(names) + 2) + "|")
        for m in milestones + ["VMM exit"]:
            row = []
            meds = {}
            for n in names:
                # A VMM exit only counts when the VMM ended by itself with status 0.
                ts = [(r[1] if r[2] == 0 else None) if m == "VMM exit" else r[0].get(m) for r in res[n]]
                ts = [t for t in ts if t is not None]
                if len(ts) == len(res[n]):
                    meds[n] = statistics.median(ts)
                    row.append(f"{meds[n]:.1f}")
                else:
                    row.append(f"{len(ts)}/{len(res[n])} ok")
            ratio = (f"{meds['rvmm'] / meds['qemu-tcg']:.1f}" if "rvmm" in meds and "qemu-tcg" in meds
                     and meds["qemu-tcg"] > 0 else "-")
            print(f"| {m} | " + " | ".join(row) + f" | {ratio} |")
        if args.qemu_kvm:
            seen, end, status, out, err = res["qemu-kvm"][-1]
            print()
            print(f"qemu-kvm, last run: status {status} after {end:.1f} s; last console line: "
                  f"{(out.strip().splitlines() or [''])[-1][:120]!r}; stderr: {err.strip()[:300]!r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
