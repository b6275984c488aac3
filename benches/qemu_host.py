"""What the benchmarks need to know about QEMU on this host.

On some hosts QEMU 7.2 aborts with plain `-cpu host` (it cannot set MSR 0x10a, IA32_ARCH_CAPABILITIES,
that KVM reports); `-cpu host,-arch-capabilities` runs there. rvmm's `-cpu host` needs nothing.
"""

import subprocess

PLAIN = "host"
WITHOUT_ARCH_CAPABILITIES = "host,-arch-capabilities"


def qemu_cpu(qemu):
    """The -cpu value QEMU runs with here: start a paused microvm (the vCPU is created, which is where
    the abort happens) and see whether it is still alive after a second."""
    argv = [qemu, "-M", "microvm", "-accel", "kvm", "-cpu", PLAIN, "-m", "64", "-nodefaults",
            "-display", "none", "-S"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=1.5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return PLAIN
    err = proc.stderr.read().decode(errors="replace").strip().splitlines()
    print(f"note: QEMU failed with -cpu host ({err[-1] if err else f'status {proc.returncode}'}); "
          f"giving it -cpu {WITHOUT_ARCH_CAPABILITIES}")
    return WITHOUT_ARCH_CAPABILITIES
