//! QEMU's standard VGA (`-vga std`, `-device VGA`; hw/display/vga-pci.c, QEMU 7.2).
//!
//! PCI 1234:1111 revision 2, class 0x0300, subsystem 1af4:1100, no interrupt pin.
//! - BAR0: 16 MiB prefetchable framebuffer (video memory; the VMM maps it as a dirty-logged KVM
//!   memory slot, [`StdVga::framebuffer_device`] serves accesses while it is not mapped).
//! - BAR2: 4 KiB MMIO ([`StdVga::mmio_device`]): 0x000 EDID (edid.rs), 0x400
//!   the VGA ports 0x3c0-0x3df, 0x500 the Bochs DISPI registers (16-bit, index = offset / 2),
//!   0x600 QEMU's extended registers (size, byte order).
//! - ROM BAR: the VGA BIOS (`vgabios-stdvga.bin`), added by the VMM.
//! - Legacy: ports 0x3b0-0x3df ([`StdVga::ports_device`]), Bochs VBE ports 0x1ce-0x1d0
//!   ([`StdVga::vbe_device`]) and the 0xa0000-0xbffff window ([`StdVga::window_device`]).

mod edid;
mod regs;
mod render;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use self::regs::VgaRegs;
pub use self::regs::VgaRegsState;
use self::render::Renderer;
use super::vram::{DirtyLog, Vram, VramError, VramRun};
use super::{next_source_id, DisplaySource, Framebuffer, RenderResult};
use crate::pci::{
    BarChange, BarKind, BarSpec, PciConfig, PciConfigError, PciDevice, PciIdentity, PciRegion,
    PciSpace, PCI_SUBDEVICE_ID_QEMU, PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};
use crate::{BusDevice, Persist, StateError};

/// Video memory: QEMU's default `vgamem_mb=16`.
pub const VGA_VRAM_SIZE: u64 = 16 << 20;
/// BAR2, QEMU's "vga.mmio" region.
pub const VGA_MMIO_SIZE: u64 = 0x1000;
/// The legacy memory window.
pub const VGA_WINDOW_BASE: u64 = 0xa0000;
pub const VGA_WINDOW_SIZE: u64 = 0x20000;
/// The legacy register ports (monochrome and colour CRTC, sequencer, graphics, attribute, DAC).
pub const VGA_PORTS_BASE: u64 = 0x3b0;
pub const VGA_PORTS_LEN: u64 = 0x30;
/// Bochs VBE index (0x1ce) and data (0x1cf, and 0x1d0 as on QEMU's x86 targets).
pub const VBE_PORTS_BASE: u64 = 0x1ce;
pub const VBE_PORTS_LEN: u64 = 3;

const VGA_VENDOR: u16 = 0x1234;
const VGA_DEVICE: u16 = 0x1111;
const VGA_REVISION: u8 = 2;
/// BAR2 layout (vga-pci.c).
const MMIO_EDID_LEN: u64 = 0x400;
const MMIO_VGA_PORTS: u64 = 0x400;
const MMIO_VGA_PORTS_LEN: u64 = 0x20;
const MMIO_BOCHS: u64 = 0x500;
const MMIO_BOCHS_LEN: u64 = 0x16;
const MMIO_QEXT: u64 = 0x600;
const QEXT_SIZE: u32 = 8;
/// `PCI_VGA_QEXT_LITTLE_ENDIAN`.
const QEXT_LITTLE_ENDIAN: u32 = 0x1e1e_1e1e;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VgaError {
    #[error("VGA: {0}")]
    Vram(#[from] VramError),
    #[error("VGA: {0}")]
    Config(#[from] PciConfigError),
}

/// See [`StdVga::set_flush_hook`].
pub type FlushHook = Arc<dyn Fn() + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The standard VGA: registers, video memory and the picture rendered from them.
pub struct StdVga {
    regs: Mutex<VgaRegs>,
    vram: Arc<Vram>,
    renderer: Mutex<Renderer>,
    dirty_log: OnceLock<Arc<dyn DirtyLog>>,
    /// Completes guest writes the VMM has queued but not yet delivered (coalesced MMIO).
    flush: OnceLock<FlushHook>,
    source: u64,
    config: Mutex<PciConfig>,
}

impl StdVga {
    /// A powered-on VGA with 16 MiB of video memory; `rom_size` is the ROM BAR's size (0: none).
    pub fn new(rom_size: u64) -> Result<Arc<Self>, VgaError> {
        Self::build(rom_size, false)
    }

    /// QEMU's `bochs-display` (hw/display/bochs-display.c): the same PCI id, class 0x0380, the
    /// framebuffer and BAR2 with the DISPI registers, no legacy VGA (the VMM maps no ports or
    /// window); the picture is the VBE mode or blank.
    pub fn new_bochs_display(rom_size: u64) -> Result<Arc<Self>, VgaError> {
        Self::build(rom_size, true)
    }

    fn build(rom_size: u64, bochs: bool) -> Result<Arc<Self>, VgaError> {
        let vram = Arc::new(Vram::new(VGA_VRAM_SIZE as usize)?);
        let mut config = PciConfig::new(&PciIdentity {
            vendor: VGA_VENDOR,
            device: VGA_DEVICE,
            class: 0x03,
            subclass: if bochs { 0x80 } else { 0x00 },
            prog_if: 0,
            revision: VGA_REVISION,
            subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
            subsystem: PCI_SUBDEVICE_ID_QEMU,
        });
        config.add_bar(
            0,
            BarSpec {
                size: VGA_VRAM_SIZE,
                kind: BarKind::Mem32,
                prefetchable: true,
            },
        )?;
        config.add_bar(
            2,
            BarSpec {
                size: VGA_MMIO_SIZE,
                kind: BarKind::Mem32,
                prefetchable: false,
            },
        )?;
        if rom_size > 0 {
            config.add_rom(rom_size)?;
        }
        Ok(Arc::new(Self {
            regs: Mutex::new(VgaRegs::new(VGA_VRAM_SIZE as u32, bochs)),
            renderer: Mutex::new(Renderer::new(&vram)),
            vram,
            dirty_log: OnceLock::new(),
            flush: OnceLock::new(),
            source: next_source_id(),
            config: Mutex::new(config),
        }))
    }

    /// Whether this is a bochs-display (no legacy VGA).
    pub fn is_bochs_display(&self) -> bool {
        lock(&self.regs).bochs
    }

    /// Video memory, for the VMM to map as BAR0.
    pub fn vram(&self) -> &Arc<Vram> {
        &self.vram
    }

    /// Where the guest's direct writes to the mapped framebuffer are logged; set once by the
    /// VMM. Without it every render redraws the whole VBE picture.
    pub fn set_dirty_log(&self, log: Arc<dyn DirtyLog>) {
        let _ = self.dirty_log.set(log);
    }

    /// Called before each render to deliver guest writes to the legacy window that the VMM
    /// queued (KVM's coalesced MMIO ring); set once by the VMM.
    pub fn set_flush_hook(&self, hook: FlushHook) {
        let _ = self.flush.set(hook);
    }

    /// The regions the VMM maps: BAR0 (framebuffer) and BAR2 (MMIO).
    pub fn regions(&self) -> Vec<(PciRegion, PciSpace, u64)> {
        lock(&self.config).regions()
    }

    pub fn ports_device(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(VgaPorts(self.clone()))
    }

    pub fn vbe_device(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(VbePorts(self.clone()))
    }

    pub fn window_device(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(LegacyWindow(self.clone()))
    }

    pub fn mmio_device(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(MmioBar(self.clone()))
    }

    pub fn framebuffer_device(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(FramebufferBar(self.clone()))
    }

    fn port_read(&self, port: u16, data: &mut [u8]) {
        let mut regs = lock(&self.regs);
        for (i, b) in data.iter_mut().enumerate() {
            *b = regs.port_read(port.wrapping_add(i as u16));
        }
    }

    fn port_write(&self, port: u16, data: &[u8]) {
        let mut regs = lock(&self.regs);
        for (i, &b) in data.iter().enumerate() {
            regs.port_write(port.wrapping_add(i as u16), b);
        }
    }
}

impl DisplaySource for StdVga {
    fn render(&self, out: &mut Framebuffer) -> RenderResult {
        if let Some(flush) = self.flush.get() {
            flush();
        }
        let regs = lock(&self.regs).clone();
        let mut r = lock(&self.renderer);
        let log = self.dirty_log.get().map(|l| l.as_ref());
        r.update(&regs, &self.vram, log);
        let (frame, r) = (r.frame, &*r);
        out.sync_rows(&r.shadow, self.source, frame, &r.rows)
    }
}

impl PciDevice for StdVga {
    fn config_read(&self, reg: usize) -> u32 {
        lock(&self.config).read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        lock(&self.config).write(reg, offset, data)
    }

    fn reset(&self) -> Vec<BarChange> {
        let bochs = lock(&self.regs).bochs;
        *lock(&self.regs) = VgaRegs::new(VGA_VRAM_SIZE as u32, bochs);
        lock(&self.config).reset()
    }
}

/// Ports 0x3b0-0x3df, byte by byte (a 16-bit `out` to an index port writes index then data).
struct VgaPorts(Arc<StdVga>);

impl BusDevice for VgaPorts {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.0.port_read((VGA_PORTS_BASE + offset) as u16, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.0.port_write((VGA_PORTS_BASE + offset) as u16, data);
    }
}

fn le16(data: &[u8]) -> u16 {
    match data {
        [a] => u16::from(*a),
        [a, b, ..] => u16::from_le_bytes([*a, *b]),
        [] => 0,
    }
}

fn put_le(data: &mut [u8], v: u32) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = v.checked_shr(8 * i as u32).unwrap_or(0) as u8;
    }
}

/// Bochs VBE: 0x1ce index, 0x1cf/0x1d0 data, 16 bits wide.
struct VbePorts(Arc<StdVga>);

impl BusDevice for VbePorts {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let v = lock(&self.0.regs).vbe_read(offset != 0);
        put_le(data, u32::from(v));
    }

    fn write(&self, offset: u64, data: &[u8]) {
        lock(&self.0.regs).vbe_write(offset != 0, le16(data), &self.0.vram);
    }
}

/// 0xa0000-0xbffff, one byte at a time as QEMU's `vga_mem_ops`.
struct LegacyWindow(Arc<StdVga>);

impl BusDevice for LegacyWindow {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let mut regs = lock(&self.0.regs);
        for (i, b) in data.iter_mut().enumerate() {
            *b = regs.mem_read(offset + i as u64, &self.0.vram);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut regs = lock(&self.0.regs);
        for (i, &b) in data.iter().enumerate() {
            regs.mem_write(offset + i as u64, b, &self.0.vram);
        }
    }
}

/// BAR2: the VGA ports, the DISPI registers and QEMU's extended registers.
struct MmioBar(Arc<StdVga>);

impl BusDevice for MmioBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset < MMIO_EDID_LEN {
            let e = edid::edid();
            for (i, b) in data.iter_mut().enumerate() {
                *b = e.get(offset as usize + i).copied().unwrap_or(0);
            }
        } else if (MMIO_VGA_PORTS..MMIO_VGA_PORTS + MMIO_VGA_PORTS_LEN).contains(&offset) {
            self.0
                .port_read((0x3c0 + offset - MMIO_VGA_PORTS) as u16, data);
        } else if (MMIO_BOCHS..MMIO_BOCHS + MMIO_BOCHS_LEN).contains(&offset) {
            let mut regs = lock(&self.0.regs);
            regs.vbe_write(false, ((offset - MMIO_BOCHS) / 2) as u16, &self.0.vram);
            put_le(data, u32::from(regs.vbe_read(true)));
        } else if offset == MMIO_QEXT {
            put_le(data, QEXT_SIZE);
        } else if offset == MMIO_QEXT + 4 {
            put_le(data, QEXT_LITTLE_ENDIAN);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if (MMIO_VGA_PORTS..MMIO_VGA_PORTS + MMIO_VGA_PORTS_LEN).contains(&offset) {
            self.0
                .port_write((0x3c0 + offset - MMIO_VGA_PORTS) as u16, data);
        } else if (MMIO_BOCHS..MMIO_BOCHS + MMIO_BOCHS_LEN).contains(&offset) {
            let mut regs = lock(&self.0.regs);
            regs.vbe_write(false, ((offset - MMIO_BOCHS) / 2) as u16, &self.0.vram);
            regs.vbe_write(true, le16(data), &self.0.vram);
        }
        // Byte order writes: only little-endian is supported, so there is nothing to change.
    }
}

/// BAR0 while it is not mapped as memory (unaligned placement): plain video memory.
struct FramebufferBar(Arc<StdVga>);

impl BusDevice for FramebufferBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        match usize::try_from(offset) {
            Ok(o) => self.0.vram.read(o, data),
            Err(_) => data.fill(0xff),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Ok(o) = usize::try_from(offset) {
            self.0.vram.write(o, data);
        }
    }
}

/// A VGA in a snapshot: its registers and the video memory pages that hold data. The video
/// memory is guest-visible memory, but it is the device's (a BAR, not RAM): it goes with the
/// device state, not the memory file (docs/SNAPSHOT.md). PCI config space is saved with the bus.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VgaState {
    pub regs: VgaRegsState,
    pub vram: Vec<VramRun>,
}

impl Persist for StdVga {
    type State = VgaState;

    fn save(&self) -> VgaState {
        // Window writes still in KVM's coalesced ring belong to the saved picture.
        if let Some(flush) = self.flush.get() {
            flush();
        }
        VgaState {
            regs: lock(&self.regs).save(),
            vram: self.vram.save_runs(),
        }
    }

    fn restore(&self, s: VgaState) -> Result<(), StateError> {
        let mut regs = lock(&self.regs);
        let mut restored = regs.clone();
        restored.restore(s.regs)?;
        self.vram
            .restore_runs(&s.vram)
            .map_err(|e| StateError::Invalid(format!("VGA: {e}")))?;
        *regs = restored;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
