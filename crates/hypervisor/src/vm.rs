//! The VM file descriptor: memory slots, the in-kernel irqchip and PIT, ioeventfds and irqfds,
//! vCPU creation.

mod coalesced;
mod ioevent;
mod memory;
mod routing;

pub use coalesced::CoalescedRing;
pub(crate) use ioevent::datamatch_text;
pub use ioevent::IoEventAddr;
pub use memory::{MemoryFlags, MemorySlot};
pub use routing::{GsiRoute, KERNEL_IOAPIC_PINS};

use crate::{ioctl_err, HvError, Result, Vcpu};
use kvm_bindings::{
    kvm_clock_data, kvm_enable_cap, kvm_msi, kvm_pit_config, KVM_CAP_SPLIT_IRQCHIP,
    KVM_CAP_X2APIC_API, KVM_PIT_SPEAKER_DUMMY, KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
    KVM_X2APIC_API_USE_32BIT_IDS,
};
use kvm_ioctls::{Cap, VmFd};
use memory::SlotTable;
use routing::RoutingTable;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use vmm_sys_util::eventfd::EventFd;

/// Where KVM keeps the three pages of its real-mode TSS on Intel (below the 4 GiB boundary, inside
/// the MMIO gap, as QEMU and Firecracker place it).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// One KVM virtual machine.
pub struct Vm {
    pub(crate) fd: VmFd,
    /// KVM_GET_MSR_INDEX_LIST: the MSRs a snapshot saves.
    msr_indices: Vec<u32>,
    /// Whether the in-kernel PIC/IOAPIC and PIT were created (what a snapshot holds).
    irqchip: AtomicBool,
    pit: AtomicBool,
    /// Memory slots by number; taken only to change the memory map, never on an exit path.
    slots: Mutex<SlotTable>,
    /// The GSI routing table, set whole on every change.
    routes: Mutex<RoutingTable>,
}

impl Vm {
    pub(crate) fn new(fd: VmFd, msr_indices: Vec<u32>) -> Self {
        let slot_limit = fd.check_extension_int(Cap::NrMemslots);
        Self {
            fd,
            msr_indices,
            irqchip: AtomicBool::new(false),
            pit: AtomicBool::new(false),
            slots: Mutex::new(SlotTable::new(slot_limit)),
            routes: Mutex::new(RoutingTable::default()),
        }
    }

    /// Create the in-kernel PIC, IOAPIC and LAPICs, wired as a PC (`RoutingTable::pc_irqchip`:
    /// the PIT's GSI 0 reaches IOAPIC pin 2). Must come before any vCPU is created.
    /// The VM's binary statistics (KVM_GET_STATS_FD).
    pub fn stats_fd(&self) -> Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsRawFd;
        crate::stats_fd(self.fd.as_raw_fd())
    }

    pub fn create_irqchip(&self) -> Result<()> {
        self.fd
            .set_tss_address(KVM_TSS_ADDRESS)
            .map_err(ioctl_err("KVM_SET_TSS_ADDR"))?;
        self.fd
            .create_irq_chip()
            .map_err(ioctl_err("KVM_CREATE_IRQCHIP"))?;
        self.irqchip.store(true, Ordering::Relaxed);
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        *routes = RoutingTable::pc_irqchip();
        self.commit_routes(&routes)
    }

    /// Whether the PIC and IOAPIC are in the kernel.
    pub fn has_irqchip(&self) -> bool {
        self.irqchip.load(Ordering::Relaxed)
    }

    /// Whether the in-kernel PIT exists.
    pub fn has_pit(&self) -> bool {
        self.pit.load(Ordering::Relaxed)
    }

    /// The MSRs KVM lists for save and restore (KVM_GET_MSR_INDEX_LIST).
    pub fn msr_indices(&self) -> &[u32] {
        &self.msr_indices
    }

    /// Keep only the LAPICs in the kernel (KVM_CAP_SPLIT_IRQCHIP); the IOAPIC and PIC, if any, are
    /// the VMM's, reached through `ioapic_pins` MSI routes. Must come before any vCPU is created.
    pub fn create_split_irqchip(&self, ioapic_pins: u32) -> Result<()> {
        let cap = kvm_enable_cap {
            cap: KVM_CAP_SPLIT_IRQCHIP,
            args: [u64::from(ioapic_pins), 0, 0, 0],
            ..Default::default()
        };
        self.fd
            .enable_cap(&cap)
            .map_err(ioctl_err("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)"))
    }

    /// Create the in-kernel i8254 PIT.
    pub fn create_pit(&self) -> Result<()> {
        let config = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(config)
            .map_err(ioctl_err("KVM_CREATE_PIT2"))?;
        self.pit.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Deliver interrupts on GSI `gsi` whenever `fd` is written (KVM_IRQFD).
    pub fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .register_irqfd(fd, gsi)
            .map_err(ioctl_err("KVM_IRQFD"))
    }

    /// Deliver interrupts on GSI `gsi` whenever `fd` is written, treating the GSI as a level
    /// that stays asserted until the guest's EOI, when KVM writes `resample` (KVM_IRQFD_FLAG_RESAMPLE).
    pub fn register_irqfd_with_resample(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<()> {
        self.fd
            .register_irqfd_with_resample(fd, resample, gsi)
            .map_err(ioctl_err("KVM_IRQFD(KVM_IRQFD_FLAG_RESAMPLE)"))
    }

    /// Inject one MSI (KVM_SIGNAL_MSI). Returns whether some LAPIC accepted it.
    pub fn signal_msi(&self, address: u64, data: u32) -> Result<bool> {
        let msi = kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        self.fd
            .signal_msi(msi)
            .map(|delivered| delivered > 0)
            .map_err(ioctl_err("KVM_SIGNAL_MSI"))
    }

    /// Make MSI routes `(gsi, address, data)` the only routes of the GSIs in `gsis`
    /// (KVM_SET_GSI_ROUTING); routes of other GSIs stay. Under the split irqchip, KVM also derives
    /// from these routes (for GSIs below the reserved IOAPIC pin count) which vectors make the
    /// LAPIC exit with KVM_EXIT_IOAPIC_EOI.
    pub fn set_msi_routes(&self, gsis: Range<u32>, routes: &[(u32, u64, u32)]) -> Result<()> {
        let mut table = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        table.clear(gsis);
        for &(gsi, address, data) in routes {
            table.set(gsi, &[GsiRoute::Msi { address, data }]);
        }
        self.commit_routes(&table)
    }

    /// Make `routes` the only routes of `gsi` (an empty list removes the GSI).
    pub fn set_gsi_routes(&self, gsi: u32, routes: &[GsiRoute]) -> Result<()> {
        let mut table = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        table.set(gsi, routes);
        self.commit_routes(&table)
    }

    /// The first GSI at or above `from` that has no route, for a new MSI route.
    pub fn free_gsi(&self, from: u32) -> Option<u32> {
        let table = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        table.first_free(from)
    }

    fn commit_routes(&self, table: &RoutingTable) -> Result<()> {
        let kvm = table
            .to_kvm()
            .ok_or(HvError::MissingCapability("more GSI routes"))?;
        self.fd
            .set_gsi_routing(&kvm)
            .map_err(ioctl_err("KVM_SET_GSI_ROUTING"))
    }

    /// Let APIC IDs above 255 reach the in-kernel LAPICs (x2APIC, KVM_CAP_X2APIC_API), as QEMU
    /// does for more than 255 vCPUs. Must come before any vCPU is created.
    pub fn enable_x2apic_api(&self) -> Result<()> {
        let cap = kvm_enable_cap {
            cap: KVM_CAP_X2APIC_API,
            args: [
                u64::from(KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK),
                0,
                0,
                0,
            ],
            ..Default::default()
        };
        self.fd
            .enable_cap(&cap)
            .map_err(ioctl_err("KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)"))
    }

    /// The VM's kvmclock value in nanoseconds (KVM_GET_CLOCK), saved when the VM is paused.
    pub fn clock(&self) -> Result<u64> {
        let data = self.fd.get_clock().map_err(ioctl_err("KVM_GET_CLOCK"))?;
        Ok(data.clock)
    }

    /// Set the kvmclock to `ns` (KVM_SET_CLOCK), so that time stands still across a pause as in
    /// QEMU's kvmclock device (`kvmclock_vm_state_change`).
    pub fn set_clock(&self, ns: u64) -> Result<()> {
        let data = kvm_clock_data {
            clock: ns,
            ..Default::default()
        };
        self.fd.set_clock(&data).map_err(ioctl_err("KVM_SET_CLOCK"))
    }

    /// `KVM_CREATE_VCPU` with the given APIC ID.
    pub fn create_vcpu(&self, id: u32) -> Result<Vcpu> {
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(ioctl_err("KVM_CREATE_VCPU"))?;
        Ok(Vcpu::new(fd, id))
    }
}
