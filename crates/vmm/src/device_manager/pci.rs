//! The PCI bus tree: the host bridge and the configuration mechanisms (ports 0xCF8/0xCFC on pc
//! and q35, ECAM on q35), the PCI `-device`s (root ports and what sits behind them:
//! pci_bridge.rs), and [`PciRelocator`], which applies the BAR changes a
//! function's config writes return.
//!
//! A BAR move runs on the vCPU thread that wrote the BAR, before that vCPU resumes: address
//! allocator, bus range, KVM ioeventfds (memory slots once a device has RAM-backed BARs). A move
//! the bus refuses (the new range overlaps another device) leaves everything where it was.
//!
//! Without firmware rvmm programs the BARs itself, through the same config writes a BIOS makes:
//! each region gets an address from the machine's PCI windows, then COMMAND enables decoding.
//!
//! Lock order: PCI bus (read) -> relocator's function table -> address map -> bus writer lock.

use super::display::DisplayFactory;
pub use super::pci_memory::RegionMemory;
use super::pci_memory::NO_SLOT;
pub(crate) use super::pci_memory::{rom_region, RegionMemoryDevice};
use super::{DeviceManager, DeviceManagerError};
use rvmm_arch::allocator::{AddressAllocator, AddressMap};
use rvmm_arch::pci_irq::PciIntxRouting;
use rvmm_cli::{DeviceConfig, DisplayDeviceConfig, DisplayModel, MachineKind, PciTestdevConfig};
use rvmm_devices::chipset::{
    Ich9Lpc, Ich9Smbus, Piix3, Piix4Pm, PmBaseRelocation, ICH9_LPC_DEVFN, ICH9_SMBUS_DEVFN,
    PIIX3_DEVFN, PIIX4_PM_DEVFN,
};
use rvmm_devices::pci::{
    BarChange, BarRelocation, HostBridge, HostBridgeKind, IoEvent, PciBus, PciConfigIo,
    PciConfigMmio, PciDevice, PciLoc, PciRegion, PciSpace, PciTestdev, PcieRootPort,
    PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_LEN,
};
use rvmm_devices::{AddressSpace, Bus, BusDevice, BusError, DeviceId, MmioBus, PioBus, VmControl};
use rvmm_hypervisor::{IoEventAddr, Vm};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// COMMAND bits firmware sets to enable a function: I/O space, memory space.
const COMMAND_DECODE: u16 = 0x3;
/// Byte offset of COMMAND, of BAR 0 and of the expansion ROM BAR (PCI 3.0, 6.1).
const COMMAND_REG: usize = 1;
const BAR0_REG: usize = 4;
const ROM_REG: usize = 12;
/// KVM memory slots are made of whole pages.
const PAGE_SIZE: u64 = 0x1000;

/// One BAR or ROM of an attached function, as the device manager sees it.
pub struct RegionParts {
    pub region: PciRegion,
    pub space: PciSpace,
    pub size: u64,
    /// Serves the guest's accesses, at offsets from the region's base.
    pub device: Arc<dyn BusDevice>,
    /// ioeventfds at offsets inside the region; they move with it.
    pub ioevents: Vec<IoEvent>,
    /// Host memory KVM maps at the region (a ROM): reads never leave the guest.
    pub memory: Option<Arc<RegionMemory>>,
}

/// A PCI function to attach: its config space and its regions.
pub struct PciFunctionParts {
    pub name: String,
    pub config: Arc<dyn PciDevice>,
    pub regions: Vec<RegionParts>,
}

/// Where a `-device` asked to be: slot and function, or the first free slot.
type PciAddr = Option<(u8, u8)>;

/// A region's identity: which one, where it decodes, how big.
type RegionSpec = (PciRegion, PciSpace, u64);

struct RegionState {
    parts: RegionParts,
    id: DeviceId,
    /// Where the buses route the region now (None: unmapped).
    mapped: Option<u64>,
    /// The KVM memory slot of a memory-backed region while mapped.
    slot: Option<u32>,
}

struct FunctionState {
    name: String,
    regions: Vec<RegionState>,
}

/// Applies BAR changes: the `BarRelocation` the PCI bus calls.
pub struct PciRelocator {
    vm: Arc<Vm>,
    pio: Arc<PioBus>,
    mmio: Arc<MmioBus>,
    map: Arc<Mutex<AddressMap>>,
    functions: Mutex<BTreeMap<PciLoc, FunctionState>>,
}

/// A bus devices can name: rvmm's bus index and the root port above it (None: the root bus).
pub type NamedBus = (u8, Option<Arc<PcieRootPort>>);

/// PCI bus 0 and its relocator, kept for the VM's lifetime.
#[derive(Clone)]
pub struct PciRoot {
    pub bus: Arc<RwLock<PciBus>>,
    pub relocator: Arc<PciRelocator>,
    /// The buses devices name with `bus=`: the root bus and each root port's secondary bus, by
    /// name, with the port behind which each secondary bus sits.
    pub buses: Arc<Mutex<HashMap<String, NamedBus>>>,
    /// Functions by their `id=` (QMP `device_del`), and the unplug requests under way.
    pub peripherals: Arc<Mutex<super::pci_bridge::Peripherals>>,
    /// The snapshot registry: a function that was unplugged blocks `migrate`.
    pub states: Arc<crate::snapshot::DeviceStates>,
    /// Where the INTx pins of bus 0 interrupt (the DSDT's `_PRT` says the same).
    pub routing: PciIntxRouting,
    /// PC firmware programs the BARs (at every boot); without it rvmm does.
    pub firmware: bool,
}

fn ioevent_addr(space: PciSpace, base: u64, offset: u64) -> Option<IoEventAddr> {
    let addr = base.checked_add(offset)?;
    Some(match space {
        PciSpace::Io => IoEventAddr::Pio(u16::try_from(addr).ok()?),
        PciSpace::Memory => IoEventAddr::Mmio(addr),
    })
}

/// Map, move or unmap one range of `id` on `bus`.
fn remap<S: AddressSpace>(
    bus: &Bus<S>,
    id: DeviceId,
    size: u64,
    old: Option<u64>,
    new: Option<u64>,
) -> Result<(), BusError> {
    match (old, new) {
        (Some(old), Some(new)) => bus.move_range(id, old, new),
        (None, Some(new)) => bus.insert(id, new, size),
        (Some(old), None) => bus.remove(id, old).map(|_| ()),
        (None, None) => Ok(()),
    }
}

impl PciRelocator {
    fn functions(&self) -> MutexGuard<'_, BTreeMap<PciLoc, FunctionState>> {
        self.functions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn window(map: &mut AddressMap, space: PciSpace) -> Option<&mut AddressAllocator> {
        match space {
            PciSpace::Io => map.pci_io.as_mut(),
            PciSpace::Memory => map.pci_mmio32.as_mut(),
        }
    }

    /// Move a region's claim in its window (if it lies there) from `old` to `new`; on failure the
    /// window is as it was.
    fn reclaim(
        &self,
        space: PciSpace,
        size: u64,
        old: Option<u64>,
        new: Option<u64>,
    ) -> Result<(), rvmm_arch::allocator::AllocError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let Some(window) = Self::window(&mut map, space) else {
            return Ok(());
        };
        let old = old.filter(|&o| window.contains(o, size));
        if let Some(old) = old {
            window.release(old);
        }
        // A BAR outside the window is the guest's choice (the DSDT only advertises the window);
        // the bus still refuses overlaps.
        let claimed = match new.filter(|&n| window.contains(n, size)) {
            Some(n) => window.claim(n, size),
            None => Ok(()),
        };
        if let (Err(_), Some(old)) = (&claimed, old) {
            // Released a moment ago under the same lock: it is free.
            let _ = window.claim(old, size);
        }
        claimed
    }

    fn bus_remap(
        &self,
        r: &RegionState,
        old: Option<u64>,
        new: Option<u64>,
    ) -> Result<(), BusError> {
        let (id, size) = (r.id, r.parts.size);
        match r.parts.space {
            PciSpace::Io => remap(&self.pio, id, size, old, new),
            PciSpace::Memory => remap(&self.mmio, id, size, old, new),
        }
    }

    /// Move the region's ioeventfds from `old` to `new`; on failure every fd is back at `old`.
    fn move_ioevents(
        &self,
        r: &RegionState,
        old: Option<u64>,
        new: Option<u64>,
    ) -> Result<(), rvmm_hypervisor::HvError> {
        let space = r.parts.space;
        let events = &r.parts.ioevents;
        let at =
            |base: Option<u64>, ev: &IoEvent| base.and_then(|b| ioevent_addr(space, b, ev.offset));
        for ev in events {
            if let Some(addr) = at(old, ev) {
                self.vm
                    .unregister_ioevent_at(&ev.fd, addr, ev.len, ev.datamatch)?;
            }
        }
        for (done, ev) in events.iter().enumerate() {
            let Some(addr) = at(new, ev) else { continue };
            if let Err(e) = self
                .vm
                .register_ioevent_at(&ev.fd, addr, ev.len, ev.datamatch)
            {
                let placed = events[..done].iter().map(|ev| (ev, at(new, ev), false));
                let restore = events.iter().map(|ev| (ev, at(old, ev), true));
                for (ev, addr, register) in placed.chain(restore) {
                    let Some(addr) = addr else { continue };
                    let _ = if register {
                        self.vm
                            .register_ioevent_at(&ev.fd, addr, ev.len, ev.datamatch)
                    } else {
                        self.vm
                            .unregister_ioevent_at(&ev.fd, addr, ev.len, ev.datamatch)
                    };
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Allocator, bus, ioeventfds, in that order; each step undone if a later one fails.
    fn apply(
        &self,
        name: &str,
        r: &mut RegionState,
        new: Option<u64>,
    ) -> Result<(), DeviceManagerError> {
        let old = r.mapped;
        if old == new {
            return Ok(());
        }
        let (space, size) = (r.parts.space, r.parts.size);
        self.reclaim(space, size, old, new)
            .map_err(|source| DeviceManagerError::Alloc {
                name: name.into(),
                source,
            })?;
        if let Err(source) = self.bus_remap(r, old, new) {
            let _ = self.reclaim(space, size, new, old);
            return Err(DeviceManagerError::Bus {
                name: name.into(),
                source,
            });
        }
        if let Err(source) = self.move_ioevents(r, old, new) {
            let _ = self.bus_remap(r, new, old);
            let _ = self.reclaim(space, size, new, old);
            return Err(DeviceManagerError::Hypervisor {
                name: name.into(),
                source,
            });
        }
        if let Err(source) = self.move_memory(r, new) {
            let _ = self.move_ioevents(r, new, old);
            let _ = self.bus_remap(r, new, old);
            let _ = self.reclaim(space, size, new, old);
            return Err(DeviceManagerError::Hypervisor {
                name: name.into(),
                source,
            });
        }
        r.mapped = new;
        Ok(())
    }

    /// Add, move or remove the region's memory slot; on failure the slot is as it was.
    fn move_memory(
        &self,
        r: &mut RegionState,
        new: Option<u64>,
    ) -> Result<(), rvmm_hypervisor::HvError> {
        let Some(memory) = &r.parts.memory else {
            return Ok(());
        };
        // KVM maps whole pages; a smaller region (a 2 KiB ROM) or an unaligned address is served
        // by the bus device instead, as QEMU does for sub-page regions.
        let new = new.filter(|&a| (a | memory.size()) % PAGE_SIZE == 0);
        r.slot = match (r.slot, new) {
            (None, Some(new)) => {
                // SAFETY: the mapping is owned by `memory`, which the relocator keeps (in the
                // function table) for as long as the VM exists, so it outlives the slot.
                let slot = unsafe {
                    self.vm.add_memory_slot(
                        new,
                        memory.size(),
                        memory.map.as_ptr() as u64,
                        memory.flags(),
                    )
                }?;
                Some(slot)
            }
            (Some(slot), Some(new)) => {
                // SAFETY: same mapping as when the slot was added (see above).
                unsafe { self.vm.move_memory_slot(slot, new) }?;
                Some(slot)
            }
            (Some(slot), None) => {
                self.vm.remove_memory_slot(slot)?;
                None
            }
            (None, None) => None,
        };
        memory
            .slot
            .store(r.slot.unwrap_or(NO_SLOT), Ordering::Release);
        memory.moves.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

impl PciRelocator {
    /// Forget the function at `loc` (hot-unplug): every region unmapped (bus range, ioeventfds,
    /// memory slot, window claim).
    pub(crate) fn remove(&self, loc: PciLoc) {
        let Some(mut f) = self.functions().remove(&loc) else {
            return;
        };
        for r in &mut f.regions {
            let name = format!("{} {:?}", f.name, r.parts.region);
            if let Err(e) = self.apply(&name, r, None) {
                tracing::warn!("unplugging {name}: {e}");
            }
        }
    }
}

impl BarRelocation for PciRelocator {
    fn relocate(&self, loc: PciLoc, changes: &[BarChange]) {
        let mut fns = self.functions();
        let Some(f) = fns.get_mut(&loc) else {
            return;
        };
        for c in changes {
            let Some(r) = f.regions.iter_mut().find(|r| r.parts.region == c.region) else {
                continue;
            };
            let name = format!("{} {:?}", f.name, c.region);
            match self.apply(&name, r, c.new) {
                Ok(()) => tracing::debug!(name, old = ?c.old, new = ?c.new, "PCI region moved"),
                // Refused (overlap): the region stays where it was; QEMU says nothing either.
                Err(e) => tracing::debug!("PCI region not moved: {e}"),
            }
        }
    }
}

/// Attach the PCI `-device`s of `devices` in command-line order (a root port before what its
/// `bus=` names).
fn attach_functions(
    dm: &DeviceManager,
    devices: &[DeviceConfig],
    displays: &DisplayFactory,
    control: &Arc<dyn VmControl>,
) -> Result<(), DeviceManagerError> {
    for d in devices {
        match d {
            DeviceConfig::PciTestdev(cfg) => {
                dm.add_pci_on(cfg.bus.as_deref(), cfg.addr, testdev_parts(cfg)?)?;
            }
            DeviceConfig::Display(cfg) => {
                dm.add_pci_on(cfg.bus.as_deref(), cfg.addr, displays.parts(dm, cfg)?)?;
            }
            DeviceConfig::PcieRootPort(cfg) => dm.attach_root_port(cfg, control)?,
            _ => {}
        }
    }
    Ok(())
}

fn testdev_parts(cfg: &PciTestdevConfig) -> Result<PciFunctionParts, DeviceManagerError> {
    let name = "pci-testdev";
    let config_err = |source| DeviceManagerError::PciConfig {
        name: name.into(),
        source,
    };
    let dev = Arc::new(PciTestdev::with_membar(cfg.membar).map_err(config_err)?);
    let rom = cfg
        .romfile
        .as_deref()
        .map(|path| rom_region(name, path))
        .transpose()?;
    if let Some(rom) = &rom {
        dev.add_rom(rom.size).map_err(config_err)?;
    }
    let mut regions: Vec<RegionParts> = dev
        .regions()
        .into_iter()
        .filter_map(|(region, space, size)| {
            Some(RegionParts {
                region,
                space,
                size,
                device: dev.region_device(region)?,
                ioevents: dev.ioevents(region),
                memory: None,
            })
        })
        .collect();
    regions.extend(rom);
    Ok(PciFunctionParts {
        name: name.into(),
        config: dev,
        regions,
    })
}

impl PciRoot {
    /// The GSI INTx `pin` (the interrupt pin register: 1 = INTA ... 4 = INTD) of the function
    /// at `loc` raises, as the DSDT's `_PRT` describes it; None for pin 0 (no INTx) or > 4.
    /// Behind bridges the pin is swizzled at each one (PCI-to-PCI bridge spec 1.2, 9.1:
    /// (pin + device) mod 4), as QEMU's `pci_swizzle_map_irq_fn`.
    pub fn intx_gsi(&self, loc: PciLoc, pin: u8) -> Option<u32> {
        if !(1..=4).contains(&pin) {
            return None;
        }
        let bus = self.bus.read().unwrap_or_else(|e| e.into_inner());
        let (mut loc, mut pin) = (loc, pin - 1);
        while let Some(bridge) = bus.bridge_of(loc.bus) {
            pin = (pin + loc.slot()) % 4;
            loc = bridge;
        }
        Some(self.routing.gsi(loc.slot(), pin))
    }

    /// Program every function's regions as firmware would: an address for each from the
    /// machine's windows, then decoding on. Goes through config space, so the relocator maps
    /// them. At start-up and after each reset (no firmware runs under direct kernel boot).
    pub fn program_bars(&self) -> Result<(), DeviceManagerError> {
        super::pci_bridge::number_buses(&self.bus.read().unwrap_or_else(|e| e.into_inner()));
        let plan: Vec<(PciLoc, String, Vec<RegionSpec>)> = self
            .relocator
            .functions()
            .iter()
            .map(|(loc, f)| {
                let regions = f
                    .regions
                    .iter()
                    .map(|r| (r.parts.region, r.parts.space, r.parts.size))
                    .collect();
                (*loc, f.name.clone(), regions)
            })
            .collect();
        // Every address first, each claimed until all are chosen, so no two regions share one;
        // then released: the relocator claims each as its decoding turns on.
        let mut placed: Vec<(PciLoc, &str, PciRegion, PciSpace, u64)> = Vec::new();
        {
            let mut map = self.relocator.map.lock().unwrap_or_else(|e| e.into_inner());
            let mut allocate = |name: &str, region: PciRegion, space, size| {
                let window = PciRelocator::window(&mut map, space)
                    .ok_or_else(|| DeviceManagerError::NoPciBus { name: name.into() })?;
                window
                    .allocate(size, size)
                    .map_err(|source| DeviceManagerError::Alloc {
                        name: format!("{name} {region:?}"),
                        source,
                    })
            };
            let mut result = Ok(());
            'all: for (loc, name, regions) in &plan {
                for &(region, space, size) in regions {
                    match allocate(name, region, space, size) {
                        Ok(addr) => placed.push((*loc, name, region, space, addr)),
                        Err(e) => {
                            result = Err(e);
                            break 'all;
                        }
                    }
                }
            }
            for &(_, _, _, space, addr) in &placed {
                if let Some(window) = PciRelocator::window(&mut map, space) {
                    window.release(addr);
                }
            }
            result?;
        }
        let bus = self.bus.read().unwrap_or_else(|e| e.into_inner());
        for &(loc, _, region, _, addr) in &placed {
            let reg = match region {
                PciRegion::Bar(i) => BAR0_REG + usize::from(i),
                // Placed but not enabled (bit 0), as SeaBIOS leaves ROMs it does not run; the
                // guest enables it to read it (Linux's pci_map_rom does).
                PciRegion::Rom => ROM_REG,
            };
            bus.write_at_and_relocate(loc, reg, 0, &(addr as u32).to_le_bytes());
            if addr > u64::from(u32::MAX) {
                let high = ((addr >> 32) as u32).to_le_bytes();
                bus.write_at_and_relocate(loc, reg + 1, 0, &high);
            }
        }
        for (loc, name, _) in &plan {
            bus.write_at_and_relocate(*loc, COMMAND_REG, 0, &COMMAND_DECODE.to_le_bytes());
            tracing::debug!(name, ?loc, "PCI function programmed");
        }
        Ok(())
    }

    /// Machine reset: every function back to its power-on state (regions unmapped), then
    /// programmed again unless firmware will do it.
    pub fn reset(&self) -> Result<(), DeviceManagerError> {
        self.bus
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .reset_devices();
        if self.firmware {
            return Ok(());
        }
        self.program_bars()
    }
}

/// A PCI function the device manager attached: where it is and its regions' ids on the buses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunctionIds {
    pub loc: PciLoc,
    pub regions: Vec<(PciRegion, DeviceId)>,
}

impl DeviceManager {
    /// Attach a PCI function at `addr` (or the first free slot) of the root bus.
    pub fn add_pci(
        &self,
        addr: PciAddr,
        f: PciFunctionParts,
    ) -> Result<PciFunctionIds, DeviceManagerError> {
        self.add_pci_on(None, addr, f)
    }

    /// Attach a PCI function at `addr` (or the first free slot) of the bus named `bus` (None:
    /// the root bus): its config space on that bus, each region registered on its bus (mapped
    /// once its BAR is programmed, by rvmm or the guest). Behind a root port, the port's slot
    /// reports the device present.
    pub fn add_pci_on(
        &self,
        bus_name: Option<&str>,
        addr: PciAddr,
        f: PciFunctionParts,
    ) -> Result<PciFunctionIds, DeviceManagerError> {
        let PciFunctionParts {
            name,
            config,
            regions,
        } = f;
        let root = self
            .pci
            .get()
            .ok_or_else(|| DeviceManagerError::NoPciBus { name: name.clone() })?;
        let (index, port) = match bus_name {
            None => (0, None),
            Some(b) => root
                .buses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(b)
                .cloned()
                .ok_or_else(|| DeviceManagerError::NoSuchPciBus {
                    name: name.clone(),
                    bus: b.into(),
                })?,
        };
        let mut bus = root.bus.write().unwrap_or_else(|e| e.into_inner());
        let (slot, function) = match addr {
            Some(a) => a,
            None => (
                bus.free_slot_on(index)
                    .ok_or_else(|| DeviceManagerError::NoPciSlot { name: name.clone() })?,
                0,
            ),
        };
        let link = express_link_status(&*config);
        let loc = bus
            .add_device_on(index, slot, function, config)
            .map_err(|source| DeviceManagerError::Pci {
                name: name.clone(),
                source,
            })?;
        drop(bus);
        if let Some(port) = port {
            // The link is the one to the function at devfn 0 (QEMU's `pcie_sync_bridge_lnk`).
            if loc.devfn == 0 {
                port.set_populated(link);
            } else if !port.populated() {
                port.set_populated(None);
            }
        }
        let regions: Vec<RegionState> = regions
            .into_iter()
            .map(|parts| {
                let label = format!("{name} {:?}", parts.region);
                let id = match parts.space {
                    PciSpace::Io => self.pio.register(&label, parts.device.clone()),
                    PciSpace::Memory => self.mmio.register(&label, parts.device.clone()),
                };
                RegionState {
                    parts,
                    id,
                    mapped: None,
                    slot: None,
                }
            })
            .collect();
        let ids = PciFunctionIds {
            loc,
            regions: regions.iter().map(|r| (r.parts.region, r.id)).collect(),
        };
        root.relocator
            .functions()
            .insert(loc, FunctionState { name, regions });
        Ok(ids)
    }
}

/// The Link Status of a function's PCI Express capability; None for a conventional function.
fn express_link_status(f: &dyn PciDevice) -> Option<u16> {
    const CAP_ID_EXP: u32 = 0x10;
    const LNKSTA: usize = 0x12;
    let mut at = (f.config_read(0x34 / 4) & 0xfc) as usize;
    // A list longer than the space is a loop.
    for _ in 0..64 {
        if at < 0x40 {
            return None;
        }
        let header = f.config_read(at / 4);
        if header & 0xff == CAP_ID_EXP {
            let reg = f.config_read((at + LNKSTA) / 4);
            return Some((reg >> (8 * ((at + LNKSTA) % 4))) as u16);
        }
        at = ((header >> 8) & 0xfc) as usize;
    }
    None
}

/// A chipset function: its name, slot and function, config space.
type ChipsetFunction = (&'static str, (u8, u8), Arc<dyn PciDevice>);

/// The chipset's functions besides the host bridge, at QEMU's addresses: on q35 the ICH9 LPC
/// bridge (00:1f.0) and SMBus controller (00:1f.3), on pc the PIIX3 ISA bridge (00:01.0) and
/// PIIX4 PM (00:01.3; 00:01.1 is left to the PIIX IDE). They have no regions the VMM maps, so
/// they go on the bus directly; `pm_block` follows their PM base.
fn chipset_functions(
    kind: HostBridgeKind,
    pm_block: Option<Arc<dyn PmBaseRelocation>>,
) -> Vec<ChipsetFunction> {
    match kind {
        HostBridgeKind::Q35 => vec![
            ("ICH9 LPC", ICH9_LPC_DEVFN, Arc::new(Ich9Lpc::new(pm_block))),
            ("ICH9 SMBus", ICH9_SMBUS_DEVFN, Arc::new(Ich9Smbus::new())),
        ],
        HostBridgeKind::I440fx => vec![
            ("PIIX3", PIIX3_DEVFN, Arc::new(Piix3::new())),
            ("PIIX4 PM", PIIX4_PM_DEVFN, Arc::new(Piix4Pm::new(pm_block))),
        ],
    }
}

/// PCI bus 0 with its host bridge, reachable through ports 0xCF8/0xCFC (pc and q35) and ECAM
/// (q35), and the PCI `-device`s, their BARs programmed as firmware would. microvm has no PCI.
pub fn attach_pci(
    dm: &DeviceManager,
    machine: MachineKind,
    devices: &[DeviceConfig],
    control: &Arc<dyn VmControl>,
    firmware: bool,
    displays: &DisplayFactory,
) -> Result<Option<PciRoot>, DeviceManagerError> {
    let kind = match machine {
        MachineKind::Microvm => return Ok(None),
        MachineKind::Q35 => HostBridgeKind::Q35,
        MachineKind::Pc => HostBridgeKind::I440fx,
    };
    let relocator = Arc::new(PciRelocator {
        vm: dm.vm.clone(),
        pio: dm.pio.clone(),
        mmio: dm.mmio.clone(),
        map: dm.map.clone(),
        functions: Mutex::new(BTreeMap::new()),
    });
    let mut bus = PciBus::new();
    bus.set_relocation(relocator.clone());
    bus.add_device(0, 0, Arc::new(HostBridge::new(kind)))
        .map_err(|source| DeviceManagerError::Pci {
            name: "PCI host bridge".into(),
            source,
        })?;
    for (name, (slot, function), dev) in chipset_functions(kind, dm.pm_block.get().cloned()) {
        bus.add_device(slot, function, dev)
            .map_err(|source| DeviceManagerError::Pci {
                name: name.into(),
                source,
            })?;
    }
    let bus = Arc::new(RwLock::new(bus));
    let root_name = match kind {
        HostBridgeKind::Q35 => "pcie.0",
        HostBridgeKind::I440fx => "pci.0",
    };
    let root = PciRoot {
        bus: bus.clone(),
        relocator,
        buses: Arc::new(Mutex::new(HashMap::from([(
            root_name.to_string(),
            (0, None),
        )]))),
        peripherals: Arc::default(),
        states: dm.states().clone(),
        firmware,
        routing: match kind {
            HostBridgeKind::Q35 => PciIntxRouting::Q35,
            HostBridgeKind::I440fx => PciIntxRouting::I440fx,
        },
    };
    if dm.pci.set(root.clone()).is_err() {
        return Err(DeviceManagerError::PciBusTwice);
    }
    // QEMU creates the default VGA with the machine, before the -devices.
    if displays.default_vga {
        let vga = DisplayDeviceConfig {
            model: DisplayModel::StdVga,
            bus: None,
            addr: None,
        };
        dm.add_pci(None, displays.parts(dm, &vga)?)?;
    }
    attach_functions(dm, devices, displays, control)?;
    let config_io = Arc::new(PciConfigIo::new(bus.clone(), control.clone()));
    dm.add_pio(
        "PCI config ports",
        PCI_CONFIG_IO_BASE,
        PCI_CONFIG_IO_LEN,
        config_io.clone(),
    )?;
    dm.states().register("PCI config ports", config_io);
    if let Some(ecam) = dm.fixed_mmio().pci_ecam {
        dm.add_fixed_mmio(ecam, Arc::new(PciConfigMmio::new(bus.clone())))?;
        dm.states().register_stateless(ecam.name);
    }
    dm.states().register(
        "PCI bus 0",
        Arc::new(crate::snapshot::pci::PciConfigState(bus.clone())),
    );
    Ok(Some(root))
}
