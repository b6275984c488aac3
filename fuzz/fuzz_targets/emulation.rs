//! The instruction-emulation fallback (what rvmm completes when the host's KVM cannot emulate an
//! instruction: int3, iret, popcnt, fwait, ldmxcsr/stmxcsr, clac/stac): a real KVM vCPU (never
//! run) holds registers from the input, guest memory holds page tables, stacks and descriptor
//! tables from the input, and `recover` decodes and completes the failing instruction through
//! KVM's address translation, as the vCPU thread does on KVM_INTERNAL_ERROR_EMULATION. Needs
//! /dev/kvm; without it every input is a no-op (the run says so once).
//!
//! Input: mode (bits 0-1: real / 32-bit protected / 64-bit long mode; bit 2: CPL 3; bit 3: the
//! memory bytes start at 0, over the page tables), the 16 GPRs, RIP, RFLAGS, CR0/CR4 bits to
//! flip, the failure's reported length and 15 instruction bytes, then guest memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_fuzz::Reader;
use rvmm_hypervisor::{kvm_regs, Hypervisor, MemoryFlags, Vcpu, Vm};
use rvmm_vmm::emulation::{recover, EmulationCounters};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MEM_SIZE: usize = 1 << 16;
/// Where the long-mode page tables live (PML4, PDPT, PD of 2 MiB pages: 1 GiB identity-mapped).
const PML4: u64 = 0x1000;
/// Where the input's memory goes unless it asks to start at 0.
const DATA: u64 = 0x4000;

struct Rig {
    _vm: Vm,
    vcpu: Vcpu,
    mem: GuestMemoryMmap,
    counters: EmulationCounters,
}

fn rig() -> Option<Rig> {
    let hv = Hypervisor::open().ok()?;
    let vm = hv.create_vm().ok()?;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
    let host = mem.iter().next()?.as_ptr() as u64;
    // SAFETY: `mem` lives in the rig next to the VM for the whole process.
    unsafe { vm.add_memory_slot(0, MEM_SIZE as u64, host, MemoryFlags::default()) }.ok()?;
    let vcpu = vm.create_vcpu(0).ok()?;
    // Long mode needs a CPUID that offers it.
    vcpu.set_cpuid(&hv.supported_cpuid().ok()?).ok()?;
    Some(Rig {
        _vm: vm,
        vcpu,
        mem,
        counters: EmulationCounters::default(),
    })
}

thread_local! {
    static RIG: Option<Rig> = {
        let r = rig();
        if r.is_none() {
            eprintln!("emulation: no usable /dev/kvm, inputs are not run");
        }
        r
    };
}

fn page_tables(mem: &GuestMemoryMmap) {
    let w = |addr: u64, v: u64| mem.write_obj(v, GuestAddress(addr)).unwrap();
    for i in 0..3 * 512 {
        w(PML4 + i * 8, 0);
    }
    w(PML4, (PML4 + 0x1000) | 7);
    w(PML4 + 0x1000, (PML4 + 0x2000) | 7);
    for i in 0..512 {
        w(PML4 + 0x2000 + i * 8, (i << 21) | 0x87);
    }
}

fn run(rig: &Rig, data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.u8();
    let mut regs = kvm_regs::default();
    for g in [
        &mut regs.rax,
        &mut regs.rbx,
        &mut regs.rcx,
        &mut regs.rdx,
        &mut regs.rsi,
        &mut regs.rdi,
        &mut regs.rsp,
        &mut regs.rbp,
        &mut regs.r8,
        &mut regs.r9,
        &mut regs.r10,
        &mut regs.r11,
        &mut regs.r12,
        &mut regs.r13,
        &mut regs.r14,
        &mut regs.r15,
        &mut regs.rip,
        &mut regs.rflags,
    ] {
        *g = r.u64();
    }
    regs.rflags |= 2;
    let (cr0_flip, cr4_flip) = (r.u32(), r.u32());
    let mut failure = rvmm_hypervisor::EmulationFailure {
        insn: [0; 15],
        insn_len: r.u8() % 16,
    };
    let bytes = r.take(15);
    failure.insn[..bytes.len()].copy_from_slice(bytes);

    let mem = &rig.mem;
    // Fresh memory contents: zeroes, the page tables, then the input's bytes.
    static ZEROES: [u8; MEM_SIZE] = [0; MEM_SIZE];
    mem.write_slice(&ZEROES, GuestAddress(0)).unwrap();
    page_tables(mem);
    let at = if mode & 8 != 0 { 0 } else { DATA };
    let init = r.rest();
    let n = init.len().min(MEM_SIZE - at as usize);
    mem.write_slice(&init[..n], GuestAddress(at)).unwrap();

    let Ok(mut sregs) = rig.vcpu.sregs() else {
        return;
    };
    let cpl = if mode & 4 != 0 { 3 } else { 0 };
    let flat = |seg: &mut kvm_bindings::kvm_segment, code: bool| {
        seg.base = 0;
        seg.limit = 0xffff_ffff;
        seg.g = 1;
        seg.present = 1;
        seg.s = 1;
        seg.type_ = if code { 0xb } else { 0x3 };
        seg.dpl = cpl;
        seg.selector = if code { 0x8 } else { 0x10 } | u16::from(cpl);
        seg.unusable = 0;
    };
    match mode & 3 {
        0 | 3 => {
            // Real mode: 64 KiB segments at 0.
            sregs.cr0 = 0x10;
            sregs.efer = 0;
            for seg in [
                &mut sregs.cs,
                &mut sregs.ds,
                &mut sregs.es,
                &mut sregs.ss,
                &mut sregs.fs,
                &mut sregs.gs,
            ] {
                seg.base = 0;
                seg.selector = 0;
                seg.limit = 0xffff;
                seg.db = 0;
                seg.l = 0;
                seg.dpl = 0;
            }
        }
        1 => {
            sregs.cr0 = 0x11;
            sregs.efer = 0;
            flat(&mut sregs.cs, true);
            sregs.cs.db = 1;
            sregs.cs.l = 0;
            for seg in [&mut sregs.ds, &mut sregs.es, &mut sregs.ss] {
                flat(seg, false);
                seg.db = 1;
            }
        }
        _ => {
            sregs.cr0 = 0x8000_0011;
            sregs.cr3 = PML4;
            sregs.cr4 = 0x20;
            sregs.efer = 0x500;
            flat(&mut sregs.cs, true);
            sregs.cs.l = 1;
            sregs.cs.db = 0;
            for seg in [&mut sregs.ds, &mut sregs.es, &mut sregs.ss] {
                flat(seg, false);
            }
        }
    }
    // Flip a few control bits the input picks (AM, WP, CD; SMAP, OSFXSR, OSXMMEXCPT, ...).
    sregs.cr0 ^= u64::from(cr0_flip) & 0x6005_0020;
    sregs.cr4 ^= u64::from(cr4_flip) & 0x0030_0600;
    sregs.gdt.base = 0x5000;
    sregs.gdt.limit = 0xfff;
    sregs.idt.base = 0x6000;
    sregs.idt.limit = 0xfff;
    if rig.vcpu.set_sregs(&sregs).is_err() || rig.vcpu.set_regs(&regs).is_err() {
        return;
    }
    let _ = recover(&rig.vcpu, mem, failure, &rig.counters);
}

fuzz_target!(|data: &[u8]| {
    RIG.with(|rig| {
        if let Some(rig) = rig {
            run(rig, data);
        }
    });
});
