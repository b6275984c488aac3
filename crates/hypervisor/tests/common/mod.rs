//! A few-instruction guest for the KVM layer's tests: one vCPU in 32-bit flat protected mode
//! (paging off) running hand-assembled code from 64 KiB of RAM at guest address 0.
//!
//! Every test here needs /dev/kvm and panics, naming the failing step, when it cannot have it.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use rvmm_hypervisor::{Hypervisor, Vcpu, VcpuExit, Vm};
use std::io::ErrorKind;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest RAM: memory slot 0, guest addresses 0..RAM_SIZE.
pub const RAM_SIZE: usize = 0x1_0000;
/// Where the code is loaded and the vCPU starts.
pub const CODE_ADDR: u64 = 0x1000;
/// What the test answers to a guest's MMIO read, one byte repeated.
pub const MMIO_READ_FILL: u8 = 0xee;
/// The port the guests `out` values on for the test to see.
pub const REPORT_PORT: u8 = 0x10;

/// Anonymous, page-aligned host memory (mmap), unmapped on drop.
pub struct HostPages {
    ptr: *mut u8,
    len: usize,
}

impl HostPages {
    pub fn new(len: usize) -> Self {
        // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap of {len} bytes failed");
        Self {
            ptr: ptr.cast(),
            len,
        }
    }

    pub fn host_addr(&self) -> u64 {
        self.ptr as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len);
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: inside the mapping, checked above; volatile because the guest shares it.
            unsafe { self.ptr.add(offset + i).write_volatile(b) };
        }
    }

    pub fn read_u32(&self, offset: usize) -> u32 {
        assert!(offset + 4 <= self.len);
        let mut bytes = [0u8; 4];
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: inside the mapping, checked above; volatile because the guest shares it.
            *b = unsafe { self.ptr.add(offset + i).read_volatile() };
        }
        u32::from_le_bytes(bytes)
    }
}

impl Drop for HostPages {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr + len` is the mapping `new` made, unmapped only here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The guest's code, one instruction per call, encoded by hand (32-bit operand and address size).
#[derive(Default)]
pub struct Code(pub Vec<u8>);

impl Code {
    fn emit(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// `mov dx, port` (66 BA iw)
    pub fn mov_dx(self, port: u16) -> Self {
        let [lo, hi] = port.to_le_bytes();
        self.emit(&[0x66, 0xba, lo, hi])
    }
    /// `mov al, value` (B0 ib)
    pub fn mov_al(self, value: u8) -> Self {
        self.emit(&[0xb0, value])
    }
    /// `out dx, al` (EE)
    pub fn out_dx_al(self) -> Self {
        self.emit(&[0xee])
    }
    /// `out dx, eax` (EF)
    pub fn out_dx_eax(self) -> Self {
        self.emit(&[0xef])
    }
    /// `out port, eax` (E7 ib): reports eax to the test.
    pub fn out_eax(self, port: u8) -> Self {
        self.emit(&[0xe7, port])
    }
    /// `mov eax, value` (B8 id)
    pub fn mov_eax(self, value: u32) -> Self {
        self.emit(&[0xb8]).emit(&value.to_le_bytes())
    }
    /// `mov eax, [addr]` (A1 moffs32)
    pub fn load_eax(self, addr: u32) -> Self {
        self.emit(&[0xa1]).emit(&addr.to_le_bytes())
    }
    /// `mov [addr], eax` (A3 moffs32)
    pub fn store_eax(self, addr: u32) -> Self {
        self.emit(&[0xa3]).emit(&addr.to_le_bytes())
    }
    /// `mov [addr], ax` (66 A3 moffs32)
    pub fn store_ax(self, addr: u32) -> Self {
        self.emit(&[0x66, 0xa3]).emit(&addr.to_le_bytes())
    }
    /// `mov [addr], al` (A2 moffs32)
    pub fn store_al(self, addr: u32) -> Self {
        self.emit(&[0xa2]).emit(&addr.to_le_bytes())
    }
    /// `hlt` (F4): exits to the test, which runs the vCPU on to the next instruction.
    pub fn hlt(self) -> Self {
        self.emit(&[0xf4])
    }
}

/// A vCPU exit, copied out of kvm_run.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Out {
        port: u16,
        data: Vec<u8>,
    },
    MmioWrite {
        addr: u64,
        data: Vec<u8>,
    },
    /// Answered with `len` bytes of [`MMIO_READ_FILL`].
    MmioRead {
        addr: u64,
        len: usize,
    },
    Hlt,
}

impl Exit {
    /// The `out port, eax` of a 32-bit value to [`REPORT_PORT`].
    pub fn report(value: u32) -> Self {
        Self::Out {
            port: u16::from(REPORT_PORT),
            data: value.to_le_bytes().to_vec(),
        }
    }
}

/// One VM with one vCPU. Fields drop in order: the vCPU and VM go before the memory they map.
pub struct TestVm {
    pub vcpu: Vcpu,
    pub vm: Vm,
    pub ram: HostPages,
}

impl TestVm {
    /// RAM in slot 0 (through `set_memory_region`, as the VMM's builder maps RAM), filled with
    /// `hlt` so that a guest running past its code stops instead of looping, and `code` at
    /// [`CODE_ADDR`].
    pub fn new(code: Code) -> Self {
        let hv = Hypervisor::open().expect("these tests need /dev/kvm: open failed");
        let vm = hv.create_vm().expect("KVM_CREATE_VM");
        let ram = HostPages::new(RAM_SIZE);
        ram.write(0, &[0xf4; RAM_SIZE]);
        ram.write(CODE_ADDR as usize, &code.0);
        // SAFETY: `ram` is a field of the returned TestVm declared after `vm`, so it is unmapped
        // only after the VM is gone.
        unsafe { vm.set_memory_region(0, 0, RAM_SIZE as u64, ram.host_addr()) }
            .expect("map guest RAM");
        let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
        enter_flat_protected_mode(&vcpu, CODE_ADDR);
        Self { vcpu, vm, ram }
    }

    /// Run to the next exit the test sees; MMIO reads are answered with [`MMIO_READ_FILL`].
    pub fn run(&mut self) -> Exit {
        loop {
            let exit = match self.vcpu.run().expect("KVM_RUN") {
                VcpuExit::Interrupted => continue,
                VcpuExit::IoOut { port, data, .. } => Ok(Exit::Out {
                    port,
                    data: data.to_vec(),
                }),
                VcpuExit::MmioWrite { addr, data } => Ok(Exit::MmioWrite {
                    addr,
                    data: data.to_vec(),
                }),
                VcpuExit::MmioRead { addr, data } => {
                    data.fill(MMIO_READ_FILL);
                    Ok(Exit::MmioRead {
                        addr,
                        len: data.len(),
                    })
                }
                VcpuExit::Hlt => Ok(Exit::Hlt),
                other => Err(format!("{other:?}")),
            };
            match exit {
                Ok(exit) => return exit,
                Err(what) => {
                    let rip = self.vcpu.regs().map(|r| r.rip).unwrap_or(u64::MAX);
                    panic!("unexpected vCPU exit {what} at rip {rip:#x}");
                }
            }
        }
    }
}

/// CS, DS, ES, FS, GS, SS flat 4 GiB segments, CR0.PE set, paging off: 32-bit code can reach any
/// guest physical address below 4 GiB with a plain 32-bit operand.
fn enter_flat_protected_mode(vcpu: &Vcpu, rip: u64) {
    let mut sregs = vcpu.sregs().expect("KVM_GET_SREGS");
    let code = kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x08,
        type_: 0xb, // execute/read, accessed
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_bindings::kvm_segment {
        selector: 0x10,
        type_: 0x3, // read/write, accessed
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).expect("KVM_SET_SREGS");
    let regs = rvmm_hypervisor::kvm_regs {
        rip,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).expect("KVM_SET_REGS");
}

pub fn nonblocking_eventfd() -> EventFd {
    EventFd::new(EFD_NONBLOCK).expect("eventfd")
}

/// How many times `fd` was signalled since the last call (reading resets the count).
pub fn signals(fd: &EventFd) -> u64 {
    match fd.read() {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(e) => panic!("eventfd read: {e}"),
    }
}
