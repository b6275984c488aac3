//! The onboard disk controller of pc and q35, with the drives the command line puts on it
//! (QEMU's layout): PIIX3 IDE at 00:01.1 on pc (legacy ports 0x1f0/0x170, IRQ 14/15, bus-master
//! DMA in BAR4), the ICH9 AHCI HBA at 00:1f.2 on q35 (ABAR in BAR5, INTx through the `_PRT`, MSI
//! through KVM). Both exist whether or not a drive is attached, as in QEMU.
//!
//! Disks open through rvmm's block layer (raw and qcow2); a CD-ROM is read-only. Every image
//! is kept here so the VMM can flush it on every clean exit path.

use std::sync::Arc;

use rvmm_block::{BlockError, Disk, DiskEvents, DiskOptions, ImageFormat};
use rvmm_cli::{DriveConfig, IdeDriveConfig, MachineKind};
use rvmm_devices::pci::{PciDevice, PciRegion};
use rvmm_devices::storage::{
    Ahci, AtaDrive, BlockBackend, DriveIdentity, MsiSender, PiixIde, IDE_PRIMARY_CMD,
    IDE_PRIMARY_CTL, IDE_PRIMARY_IRQ, IDE_SECONDARY_CMD, IDE_SECONDARY_CTL, IDE_SECONDARY_IRQ,
};
use rvmm_devices::{IrqLine, MsiMessage};
use rvmm_hypervisor::Vm;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::pci::{PciFunctionParts, RegionParts};
use super::{DeviceManager, DeviceManagerError};
use crate::interrupts::Resampler;

/// QEMU's AHCI function on q35 (hw/i386/pc_q35.c: ICH9_SATA1_DEV 31, ICH9_SATA1_FUNC 2).
const AHCI_ADDR: (u8, u8) = (0x1f, 2);
/// PIIX3's IDE function on pc (hw/i386/pc_piix.c: `piix3_devfn + 1`).
const PIIX_IDE_ADDR: (u8, u8) = (1, 1);
/// ISO 9660: the primary volume descriptor at sector 16 starts with type 1, "CD001"
/// (ECMA-119 8.4).
const ISO9660_MAGIC_OFFSET: u64 = 16 * 2048 + 1;

/// A read-only disk held in memory (the built-in boot disk): `data`, then zeros up to `size`.
pub struct MemoryImage {
    pub data: &'static [u8],
    pub size: u64,
}

/// The built-in disk's size: SeaBIOS does not boot an AHCI disk of a few sectors (neither on
/// QEMU), so the boot sector sits on a 1 MiB disk.
const BUILTIN_DISK_SIZE: u64 = 1 << 20;

impl BlockBackend for MemoryImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn readonly(&self) -> bool {
        true
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let out_of_range = || BlockError::OutOfRange {
            what: "read",
            offset,
            len: buf.len() as u64,
            size: self.size(),
        };
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.size)
            .ok_or_else(out_of_range)?;
        buf.fill(0);
        let data_len = self.data.len() as u64;
        if offset < data_len {
            let src = &self.data[offset as usize..end.min(data_len) as usize];
            buf[..src.len()].copy_from_slice(src);
        }
        Ok(())
    }

    fn write_at(&self, _offset: u64, _buf: &[u8]) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }

    fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
}

/// MSIs from a device go straight to KVM (KVM_SIGNAL_MSI).
struct KvmMsi(Arc<Vm>);

impl MsiSender for KvmMsi {
    fn send(&self, msi: MsiMessage) {
        if let Err(e) = self.0.signal_msi(msi.address, msi.data) {
            tracing::warn!(
                "MSI to {:#x} (data {:#x}) failed: {e}",
                msi.address,
                msi.data
            );
        }
    }
}

/// The controller's interrupt lines and the images to flush.
#[derive(Default)]
pub struct Storage {
    disks: Vec<Arc<dyn BlockBackend>>,
    pub lines: Vec<IrqLine>,
    pub resamplers: Vec<Resampler>,
}

impl Storage {
    /// Flush every writable image (guest data reaches the host file); errors are logged.
    pub fn flush(&self) {
        for disk in self.disks.iter().filter(|d| !d.readonly()) {
            if let Err(e) = disk.flush() {
                tracing::warn!("flushing a disk at exit failed: {e}");
            }
        }
    }
}

/// Whether the file looks like an ISO 9660 CD image.
fn is_iso9660(disk: &Disk) -> bool {
    let mut magic = [0u8; 5];
    disk.read(&mut magic, ISO9660_MAGIC_OFFSET).is_ok() && &magic == b"CD001"
}

fn open(
    d: &DriveConfig,
    cdrom: bool,
    name: &str,
    events: &dyn Fn(String) -> Arc<dyn DiskEvents>,
) -> Result<Arc<Disk>, DeviceManagerError> {
    let opts = DiskOptions {
        path: d.file.clone(),
        format: d.format.as_deref().and_then(ImageFormat::from_name),
        readonly: d.readonly || cdrom,
        direct: d.direct,
        locking: d.locking,
        snapshot: d.snapshot,
        share_rw: d.share_rw,
    };
    let (disk, warning) = Disk::open(&opts).map_err(|source| DeviceManagerError::Drive {
        drive: name.to_string(),
        source,
    })?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    if !cdrom && !disk.readonly() && is_iso9660(&disk) {
        return Err(DeviceManagerError::IsoAsDisk {
            path: d.file.display().to_string(),
        });
    }
    disk.set_events(events(name.to_string()));
    Ok(Arc::new(disk))
}

/// QEMU's drive names for QMP events: `ide0-hd0`, `ide1-cd0` (`ide<bus>-<hd|cd><unit>`), or
/// the drive's `id=`.
fn drive_name(d: &IdeDriveConfig) -> String {
    d.drive
        .as_ref()
        .and_then(|c| c.id.clone())
        .unwrap_or_else(|| {
            let kind = if d.cdrom { "cd" } else { "hd" };
            format!("ide{}-{kind}{}", d.bus, d.unit)
        })
}

/// Builds the drives: the command line's, or the built-in disk as the first disk.
fn drives(
    configs: &[IdeDriveConfig],
    builtin: Option<&'static [u8]>,
    events: &dyn Fn(String) -> Arc<dyn DiskEvents>,
    storage: &mut Storage,
) -> Result<Vec<(u32, u32, AtaDrive)>, DeviceManagerError> {
    let mut out = Vec::new();
    if let Some(image) = builtin {
        let backend: Arc<dyn BlockBackend> = Arc::new(MemoryImage {
            data: image,
            size: BUILTIN_DISK_SIZE.max(image.len() as u64),
        });
        out.push((0, 0, AtaDrive::disk(backend, DriveIdentity::qemu(1))));
    }
    for (n, d) in (1u32..).zip(configs) {
        let medium: Option<Arc<dyn BlockBackend>> = match &d.drive {
            Some(c) => {
                let disk: Arc<dyn BlockBackend> = open(c, d.cdrom, &drive_name(d), events)?;
                storage.disks.push(disk.clone());
                Some(disk)
            }
            None => None,
        };
        let identity = match d.drive.as_ref().and_then(|c| c.serial.clone()) {
            Some(serial) => DriveIdentity {
                serial,
                ..DriveIdentity::qemu(n)
            },
            None => DriveIdentity::qemu(n),
        };
        let drive = match (d.cdrom, medium) {
            (true, medium) => AtaDrive::cdrom(medium, identity),
            (false, Some(medium)) => AtaDrive::disk(medium, identity),
            // The parser never produces a disk without an image.
            (false, None) => continue,
        };
        out.push((d.bus, d.unit, drive));
    }
    Ok(out)
}

/// A disk controller's snapshot state: its registers and its drives'. Its BAR windows are
/// covered by the controller's entry.
fn register_controller(
    dm: &DeviceManager,
    name: &str,
    state: Arc<dyn rvmm_devices::DeviceState>,
    regions: &[(PciRegion, rvmm_devices::pci::PciSpace, u64)],
) {
    dm.states().register(name, state);
    for (region, _, _) in regions {
        dm.states()
            .register_stateless(&format!("{name} {region:?}"));
    }
}

fn function_parts<F>(
    name: &str,
    config: Arc<dyn PciDevice>,
    regions: Vec<(PciRegion, rvmm_devices::pci::PciSpace, u64)>,
    device: F,
) -> PciFunctionParts
where
    F: Fn(PciRegion) -> Option<Arc<dyn rvmm_devices::BusDevice>>,
{
    let regions = regions
        .into_iter()
        .filter_map(|(region, space, size)| {
            Some(RegionParts {
                region,
                space,
                size,
                device: device(region)?,
                ioevents: Vec::new(),
                memory: None,
            })
        })
        .collect();
    PciFunctionParts {
        name: name.into(),
        config,
        regions,
    }
}

/// Attaches the machine's disk controller with `configs` (or the built-in disk) on it.
pub fn attach_storage(
    dm: &DeviceManager,
    machine: MachineKind,
    configs: &[IdeDriveConfig],
    builtin: Option<&'static [u8]>,
    mem: &GuestMemoryMmap,
    events: &dyn Fn(String) -> Arc<dyn DiskEvents>,
) -> Result<Storage, DeviceManagerError> {
    let mut storage = Storage::default();
    let io = |name: &str| {
        let name = name.to_string();
        move |e: std::io::Error| DeviceManagerError::Io {
            name: name.clone(),
            source: e,
        }
    };
    match machine {
        MachineKind::Microvm => return Ok(storage),
        MachineKind::Q35 => {
            let name = "ich9-ahci";
            let ahci = Arc::new(Ahci::new(mem.clone()).map_err(DeviceManagerError::Ahci)?);
            for (bus, _, drive) in drives(configs, builtin, events, &mut storage)? {
                ahci.attach(bus as usize, drive)
                    .map_err(DeviceManagerError::Ahci)?;
            }
            let dev = ahci.clone();
            let parts = function_parts(name, ahci.clone(), ahci.regions(), move |r| {
                dev.region_device(r)
            });
            let ids = dm.add_pci(Some(AHCI_ADDR), parts)?;
            register_controller(dm, name, ahci.clone(), &ahci.regions());
            // INTA through the machine's routing (the DSDT's _PRT says the same).
            let gsi = dm
                .pci_intx_gsi(ids.loc, 1)
                .ok_or_else(|| DeviceManagerError::NoPciBus { name: name.into() })?;
            let line = ahci
                .intx_line(gsi)
                .map_err(|source| DeviceManagerError::Interrupt {
                    name: name.into(),
                    source,
                })?;
            let resample = line
                .resample
                .as_ref()
                .map(EventFd::try_clone)
                .transpose()
                .map_err(io(name))?;
            if let Some(evt) = resample {
                let a = ahci.clone();
                storage
                    .resamplers
                    .push(Resampler::new(evt, Box::new(move || a.resample())));
            }
            storage.lines.push(line);
            ahci.set_msi_sender(Arc::new(KvmMsi(dm.vm().clone())));
        }
        MachineKind::Pc => {
            let name = "piix3-ide";
            let ide = Arc::new(PiixIde::new(mem.clone()).map_err(DeviceManagerError::Ide)?);
            for (bus, unit, drive) in drives(configs, builtin, events, &mut storage)? {
                ide.attach(bus as usize, unit as usize, drive)
                    .map_err(DeviceManagerError::Ide)?;
            }
            let dev = ide.clone();
            let parts = function_parts(name, ide.clone(), ide.regions(), move |r| {
                dev.region_device(r)
            });
            dm.add_pci(Some(PIIX_IDE_ADDR), parts)?;
            register_controller(dm, name, ide.clone(), &ide.regions());
            let channels = [
                (IDE_PRIMARY_CMD, IDE_PRIMARY_CTL, IDE_PRIMARY_IRQ),
                (IDE_SECONDARY_CMD, IDE_SECONDARY_CTL, IDE_SECONDARY_IRQ),
            ];
            for (channel, (cmd, ctl, irq)) in channels.into_iter().enumerate() {
                let label = format!("IDE channel {channel}");
                if let Some(d) = ide.command_block(channel) {
                    dm.add_pio(&label, cmd, 8, d)?;
                }
                if let Some(d) = ide.control_block(channel) {
                    dm.add_pio(&format!("{label} control"), ctl, 1, d)?;
                }
                // Saved as part of "piix3-ide".
                dm.states().register_stateless(&label);
                dm.states().register_stateless(&format!("{label} control"));
                let line =
                    ide.irq_line(channel, irq)
                        .map_err(|source| DeviceManagerError::Interrupt {
                            name: label.clone(),
                            source,
                        })?;
                storage.lines.push(line);
            }
        }
    }
    Ok(storage)
}

/// `bootindex=` and the OpenFirmware device path SeaBIOS matches the drive by
/// (sb/boot.c `bootprio_find_ata_device`: ".../drive@<channel or port>/disk@<unit>").
pub fn boot_paths(machine: MachineKind, configs: &[IdeDriveConfig]) -> Vec<(u32, String)> {
    configs
        .iter()
        .filter_map(|d| {
            let path = match machine {
                MachineKind::Q35 => {
                    format!("/pci@i0cf8/pci8086,2922@1f,2/drive@{:x}/disk@0", d.bus)
                }
                MachineKind::Pc => {
                    format!("/pci@i0cf8/ide@1,1/drive@{:x}/disk@{:x}", d.bus, d.unit)
                }
                MachineKind::Microvm => return None,
            };
            Some((d.bootindex?, path))
        })
        .collect()
}

/// The `bootorder` file: device paths by ascending `bootindex`, one per line, and `HALT` last
/// under `-boot strict=on` (QEMU softmmu/bootdevice.c `get_boot_devices_list`).
pub fn bootorder(mut paths: Vec<(u32, String)>, strict: bool) -> Vec<u8> {
    paths.sort_by_key(|(index, _)| *index);
    let mut out: Vec<u8> = Vec::new();
    for (_, path) in paths {
        out.extend_from_slice(path.as_bytes());
        out.push(b'\n');
    }
    if strict {
        out.extend_from_slice(b"HALT\n");
    }
    // QEMU ends the list with a NUL instead of the last newline.
    if let Some(last) = out.last_mut() {
        *last = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootorder_is_sorted_and_nul_terminated() {
        let b = bootorder(vec![(2, "/b".into()), (1, "/a".into())], true);
        assert_eq!(b, b"/a\n/b\nHALT\0");
        assert!(bootorder(Vec::new(), false).is_empty());
    }

    #[test]
    fn memory_image_refuses_reads_past_its_end() {
        let img = MemoryImage {
            data: &[1, 2, 3, 4],
            size: 6,
        };
        let mut buf = [0u8; 2];
        img.read_at(2, &mut buf).unwrap();
        assert_eq!(buf, [3, 4]);
        img.read_at(3, &mut buf).unwrap();
        assert_eq!(buf, [4, 0]);
        assert!(img.read_at(5, &mut buf).is_err());
        assert!(img.read_at(u64::MAX, &mut buf).is_err());
        assert!(img.write_at(0, &buf).is_err());
    }
}
