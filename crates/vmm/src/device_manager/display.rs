//! Display devices: QEMU's standard VGA (`-vga std`, the default on pc and q35; `-device VGA`)
//! and `-device bochs-display`, as PCI functions with their legacy ranges, the framebuffer BAR
//! as dirty-logged guest memory and the VGA BIOS as the ROM BAR.
//!
//! The VGA BIOS is found as QEMU finds ROM files (bios.rs). The framebuffer BAR is a KVM memory
//! slot that moves with the BAR ([`RegionMemory`] with `log_dirty`); the device reads KVM's
//! dirty log of that slot through [`SlotDirtyLog`] when it renders.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rvmm_cli::{DisplayDeviceConfig, DisplayModel};
use rvmm_devices::display::vga::{
    StdVga, VBE_PORTS_BASE, VBE_PORTS_LEN, VGA_PORTS_BASE, VGA_PORTS_LEN, VGA_WINDOW_BASE,
    VGA_WINDOW_SIZE,
};
use rvmm_devices::display::{DirtyLog, DisplaySource, VgaState};
use rvmm_devices::pci::{PciRegion, PciSpace};
use rvmm_devices::{Persist, StateError};
use rvmm_hypervisor::Vm;

use super::pci::{rom_region, PciFunctionParts, RegionMemory, RegionParts};
use super::{DeviceManager, DeviceManagerError};

/// QEMU's VGA BIOS for the standard VGA (Debian's `seabios` package).
pub const STDVGA_ROM: &str = "vgabios-stdvga.bin";
/// QEMU's VGA BIOS for bochs-display.
pub const BOCHS_DISPLAY_ROM: &str = "vgabios-bochs-display.bin";

/// Builds display devices for the PCI bus and remembers them for the front ends.
pub struct DisplayFactory<'a> {
    /// `-L` directories.
    pub data_dirs: &'a [std::path::PathBuf],
    /// Add the default `-vga std` before the `-device`s.
    pub default_vga: bool,
    attached: Mutex<Vec<Arc<StdVga>>>,
}

impl<'a> DisplayFactory<'a> {
    pub fn new(data_dirs: &'a [std::path::PathBuf], default_vga: bool) -> Self {
        Self {
            data_dirs,
            default_vga,
            attached: Mutex::new(Vec::new()),
        }
    }

    /// The display devices built, first the default VGA.
    pub fn devices(&self) -> Vec<Arc<StdVga>> {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a standard VGA (with the legacy window) was attached.
    pub fn has_vga_window(&self) -> bool {
        self.devices().iter().any(|d| !d.is_bochs_display())
    }

    /// The same, as front ends see them.
    pub fn sources(&self) -> Vec<Arc<dyn DisplaySource>> {
        self.devices()
            .into_iter()
            .map(|d| d as Arc<dyn DisplaySource>)
            .collect()
    }

    /// The PCI function of a display device; a standard VGA also claims its legacy ports and
    /// memory window here.
    pub fn parts(
        &self,
        dm: &DeviceManager,
        cfg: &DisplayDeviceConfig,
    ) -> Result<PciFunctionParts, DeviceManagerError> {
        let (name, rom_name) = match cfg.model {
            DisplayModel::StdVga => ("VGA", STDVGA_ROM),
            DisplayModel::BochsDisplay => ("bochs-display", BOCHS_DISPLAY_ROM),
        };
        let path = crate::bios::find_rom(rom_name, self.data_dirs).map_err(|searched| {
            DeviceManagerError::Io {
                name: name.into(),
                source: std::io::Error::other(format!(
                    "failed to find romfile \"{rom_name}\" (searched: {searched}); install Debian's 'seabios' package or give -L DIR"
                )),
            }
        })?;
        let rom = rom_region(name, &path)?;
        let vga = match cfg.model {
            DisplayModel::StdVga => StdVga::new(rom.size),
            DisplayModel::BochsDisplay => StdVga::new_bochs_display(rom.size),
        }
        .map_err(|e| DeviceManagerError::Io {
            name: name.into(),
            source: std::io::Error::other(e),
        })?;
        if cfg.model == DisplayModel::StdVga {
            dm.add_pio("VGA", VGA_PORTS_BASE, VGA_PORTS_LEN, vga.ports_device())?;
            dm.add_pio("VBE", VBE_PORTS_BASE, VBE_PORTS_LEN, vga.vbe_device())?;
            dm.add_mmio(
                "VGA window",
                VGA_WINDOW_BASE,
                VGA_WINDOW_SIZE,
                vga.window_device(),
            )?;
        }
        let framebuffer = Arc::new(RegionMemory::shared(
            vga.vram().mapping().clone(),
            false,
            true,
        ));
        vga.set_dirty_log(Arc::new(SlotDirtyLog {
            vm: dm.vm().clone(),
            memory: framebuffer.clone(),
            seen_moves: AtomicU64::new(0),
        }));
        let mut regions: Vec<RegionParts> = vga
            .regions()
            .into_iter()
            .filter_map(|(region, space, size)| {
                let (device, memory) = match region {
                    PciRegion::Bar(0) => (vga.framebuffer_device(), Some(framebuffer.clone())),
                    PciRegion::Bar(2) => (vga.mmio_device(), None),
                    _ => return None,
                };
                Some(RegionParts {
                    region,
                    space,
                    size,
                    device,
                    ioevents: Vec::new(),
                    memory,
                })
            })
            .collect();
        debug_assert!(regions.iter().all(|r| r.space == PciSpace::Memory));
        regions.push(rom);
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        attached.push(vga.clone());
        register_states(dm, name, &attached, &regions);
        drop(attached);
        Ok(PciFunctionParts {
            name: name.into(),
            config: vga,
            regions,
        })
    }
}

/// Register the snapshot state of every display device called `name` (one entry for all of
/// them: they share their bus names), and their other bus names as having no state of their own.
fn register_states(
    dm: &DeviceManager,
    name: &str,
    attached: &[Arc<StdVga>],
    regions: &[RegionParts],
) {
    let bochs = name != "VGA";
    let same: Vec<Arc<StdVga>> = attached
        .iter()
        .filter(|d| d.is_bochs_display() == bochs)
        .cloned()
        .collect();
    dm.states()
        .register(name, Arc::new(DisplayStates(name.to_string(), same)));
    if !bochs {
        dm.states().register_stateless("VBE");
        dm.states().register_stateless("VGA window");
    }
    for r in regions {
        // The framebuffer's contents, the MMIO registers: in the state above. The ROM: from
        // the command line.
        dm.states()
            .register_stateless(&format!("{name} {:?}", r.region));
    }
}

/// The display devices that share bus name `.0`, in attach order.
struct DisplayStates(String, Vec<Arc<StdVga>>);

impl Persist for DisplayStates {
    type State = Vec<VgaState>;

    fn save(&self) -> Self::State {
        self.1.iter().map(|d| d.save()).collect()
    }

    fn restore(&self, states: Self::State) -> Result<(), StateError> {
        if states.len() != self.1.len() {
            return Err(StateError::Invalid(format!(
                "{}: {} devices in the snapshot, {} here",
                self.0,
                states.len(),
                self.1.len()
            )));
        }
        for (d, s) in self.1.iter().zip(states) {
            d.restore(s)?;
        }
        Ok(())
    }
}

/// KVM's dirty log of the framebuffer BAR's memory slot, wherever the BAR is.
struct SlotDirtyLog {
    vm: Arc<Vm>,
    memory: Arc<RegionMemory>,
    /// The slot's move count at the previous call: after a move the log starts over, so the
    /// caller redraws everything once.
    seen_moves: AtomicU64,
}

impl DirtyLog for SlotDirtyLog {
    fn take_dirty(&self, bitmap: &mut [u64]) -> bool {
        let moves = self.memory.moves();
        let steady = self.seen_moves.swap(moves, Ordering::AcqRel) == moves;
        // Unmapped: the guest's accesses reach the device, which records its own writes.
        let Some(slot) = self.memory.slot() else {
            return steady;
        };
        match self.vm.dirty_log(slot) {
            Ok(bits) => {
                for (out, b) in bitmap.iter_mut().zip(bits) {
                    *out |= b;
                }
                steady
            }
            Err(e) => {
                tracing::debug!("framebuffer dirty log: {e}");
                false
            }
        }
    }
}
