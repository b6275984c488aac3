//! kvm-floor: the least a VMM can do per exit, to measure the floor of exit rates on a host.
//!
//! `kvm-floor GUEST.elf [CPUS] [CMDLINE]` boots a PVH guest (loaded with rvmm-arch, so it starts
//! exactly as under rvmm) and runs a bare `KVM_RUN` loop per vCPU over kvm-ioctls: COM1 bytes go
//! to stdout, port 0xf4 exits the process with status `(v << 1) | 1` (isa-debug-exit), ports
//! 0xe0-0xe3 and the MMIO window at 0xff000000 behave like pc-testdev, everything else is
//! ignored. No buses, no locks, no statistics: what is left is the cost of the exit itself.
//! Secondary vCPUs wait for INIT/SIPI in the in-kernel LAPIC (split irqchip, as rvmm).

use kvm_bindings::{kvm_mp_state, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_UNINITIALIZED};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd};
use rvmm_arch::{BootParams, KernelImage};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

const MEM_SIZE: u64 = 256 << 20;
const IOMEM_BASE: u64 = 0xff00_0000;

fn die(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("kvm-floor: {what}: {e}");
    std::process::exit(2)
}

/// pc-testdev's data port and (the first 8 bytes of) its iomem window.
struct Testdev {
    port: AtomicU32,
    iomem: AtomicU64,
}

fn run_vcpu(mut vcpu: VcpuFd, dev: Arc<Testdev>) {
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => match port {
                0x3f8 => {
                    // SAFETY: writes `data.len()` valid bytes to fd 1.
                    unsafe { libc::write(1, data.as_ptr().cast(), data.len()) };
                }
                0xf4 => std::process::exit(i32::from(data[0]) << 1 | 1),
                0xe0 => dev.port.store(u32::from(data[0]), Ordering::Relaxed),
                _ => {}
            },
            Ok(VcpuExit::IoIn(port, data)) => {
                let v = if port == 0xe0 {
                    dev.port.load(Ordering::Relaxed)
                } else {
                    u32::MAX
                };
                for (i, b) in data.iter_mut().enumerate() {
                    *b = (v >> (8 * (i % 4))) as u8;
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if addr == IOMEM_BASE {
                    let mut b = [0u8; 8];
                    let n = data.len().min(8);
                    b[..n].copy_from_slice(&data[..n]);
                    dev.iomem.store(u64::from_le_bytes(b), Ordering::Relaxed);
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                let v = if addr == IOMEM_BASE {
                    dev.iomem.load(Ordering::Relaxed).to_le_bytes()
                } else {
                    [0xff; 8]
                };
                let n = data.len().min(8);
                data[..n].copy_from_slice(&v[..n]);
            }
            Ok(VcpuExit::Hlt) => std::thread::yield_now(),
            Ok(other) => die("unexpected exit", format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => die("KVM_RUN", e),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        die("usage", "kvm-floor GUEST.elf [CPUS] [CMDLINE]")
    };
    let cpus: u64 = args.get(2).map_or(1, |c| c.parse().unwrap_or(1));
    let cmdline = args.get(3).map_or("", String::as_str);
    let bytes = std::fs::read(path).unwrap_or_else(|e| die(path, e));

    let kvm = Kvm::new().unwrap_or_else(|e| die("/dev/kvm", e));
    let vm = kvm.create_vm().unwrap_or_else(|e| die("KVM_CREATE_VM", e));
    let mem = GuestMemoryMmap::<()>::from_ranges(&rvmm_arch::guest_memory_regions(MEM_SIZE))
        .unwrap_or_else(|e| die("guest memory", e));
    for (slot, r) in mem.iter().enumerate() {
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: r.start_addr().raw_value(),
            memory_size: r.len(),
            userspace_addr: r.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the mapping lives in `mem` until the process exits.
        unsafe { vm.set_user_memory_region(region) }
            .unwrap_or_else(|e| die("KVM_SET_USER_MEMORY_REGION", e));
    }
    let mut cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    cap.args[0] = 24;
    vm.enable_cap(&cap)
        .unwrap_or_else(|e| die("KVM_CAP_SPLIT_IRQCHIP", e));
    let _ = kvm.check_extension(Cap::Irqchip);

    let kernel = KernelImage {
        name: path,
        bytes: &bytes,
    };
    let params = BootParams {
        initrds: &[],
        cmdline: cmdline.as_bytes(),
        mem_size: MEM_SIZE,
    };
    let entry = rvmm_arch::load_kernel(&mem, &kernel, &params).unwrap_or_else(|e| die(path, e));
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .unwrap_or_else(|e| die("KVM_GET_SUPPORTED_CPUID", e));

    let mut vcpus = Vec::new();
    for id in 0..cpus {
        let vcpu = vm
            .create_vcpu(id)
            .unwrap_or_else(|e| die("KVM_CREATE_VCPU", e));
        vcpu.set_cpuid2(&cpuid)
            .unwrap_or_else(|e| die("KVM_SET_CPUID2", e));
        if id == 0 {
            let mut sregs = vcpu.get_sregs().unwrap_or_else(|e| die("KVM_GET_SREGS", e));
            rvmm_arch::setup_cpu_mode(&mem, entry.mode, &entry.data, &mut sregs)
                .unwrap_or_else(|e| die("cpu mode", e));
            vcpu.set_sregs(&sregs)
                .unwrap_or_else(|e| die("KVM_SET_SREGS", e));
            let regs = kvm_bindings::kvm_regs {
                rip: entry.rip,
                rsp: entry.rsp,
                rax: entry.rax,
                rbx: entry.rbx,
                rsi: entry.rsi,
                rflags: 2,
                ..Default::default()
            };
            vcpu.set_regs(&regs)
                .unwrap_or_else(|e| die("KVM_SET_REGS", e));
        } else {
            vcpu.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_UNINITIALIZED,
            })
            .unwrap_or_else(|e| die("KVM_SET_MP_STATE", e));
        }
        vcpus.push(vcpu);
    }
    // Rebuild KVM's APIC ID map now that every vCPU exists (as QEMU's KVM_SET_LAPIC at reset).
    for vcpu in &vcpus {
        let lapic = vcpu.get_lapic().unwrap_or_else(|e| die("KVM_GET_LAPIC", e));
        vcpu.set_lapic(&lapic)
            .unwrap_or_else(|e| die("KVM_SET_LAPIC", e));
    }
    let dev = Arc::new(Testdev {
        port: AtomicU32::new(0),
        iomem: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    for vcpu in vcpus {
        let dev = dev.clone();
        threads.push(std::thread::spawn(move || run_vcpu(vcpu, dev)));
    }
    for t in threads {
        let _ = t.join();
    }
}
