//! ACPI tables for a PC guest (ACPI 6.5): RSDP, XSDT, FADT, FACS, MADT and DSDT, built with
//! the `acpi_tables` crate and written to the BIOS area, where firmware-less guests look:
//! Linux and other kernels scan 0xE0000..0xFFFFF for the "RSD PTR " signature on 16-byte
//! boundaries (ACPI 6.5 section 5.2.5.1); PVH and the Linux boot protocol also pass the RSDP
//! address (`hvm_start_info.rsdp_paddr`, `boot_params.acpi_rsdp_addr`).
//!
//! The machine they describe is QEMU q35's, minus SMM: the ICH9 PM block at 0x600 (PM1a_EVT
//! 0x600, PM1a_CNT 0x604, PM_TMR 0x608, GPE0 0x620), SCI on IRQ 9, reset through the RST_CNT
//! register at port 0xCF9 (value 0x0F, QEMU's choice), the RTC century at CMOS 0x32, the fixed
//! power button, one IOAPIC at 0xFEC00000 with GSI base 0, ISA IRQ 0 on GSI 2, and COM1.
//! `SMI_CMD` is 0: the machine starts in ACPI mode (SCI_EN set), so there is no handshake.

mod dsdt;
mod loader;
mod madt;

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

pub use dsdt::dsdt;
pub use loader::{firmware_tables, FirmwareAcpi, RSDP_FILE, TABLES_FILE, TABLE_LOADER_FILE};
pub use madt::madt;

/// The RSDP goes at the start of the BIOS area the guest scans.
pub const RSDP_ADDR: u64 = 0xe_0000;
/// The other ACPI tables follow the RSDP up to here; the MP table starts at this address.
pub const ACPI_TABLES_END: u64 = 0xf_0000;
/// OEM ID in every table header.
pub const OEM_ID: [u8; 6] = *b"RVMM  ";
/// OEM revision in every table header.
const OEM_REVISION: u32 = 1;

/// Local APIC base address (Intel SDM vol. 3 section 11.4.1).
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The IOAPIC's base address, as on every PC.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// System control interrupt (ISA IRQ 9, level, active high: ACPI 6.5 section 5.2.9).
pub const SCI_IRQ: u16 = 9;
/// ICH9 PMBASE and the fixed-feature registers in it.
pub const PM_BASE: u16 = 0x600;
pub const PM1A_EVT_BLK: u16 = PM_BASE;
pub const PM1A_CNT_BLK: u16 = PM_BASE + 4;
pub const PM_TMR_BLK: u16 = PM_BASE + 8;
pub const GPE0_BLK: u16 = PM_BASE + 0x20;
/// GPE0 block length on ICH9 (QEMU `ICH9_PMIO_GPE0_LEN`).
pub const GPE0_BLK_LEN: u8 = 0x10;
/// ICH9 reset control register (RST_CNT) and the value QEMU's FADT writes to reset.
pub const RESET_PORT: u16 = 0xcf9;
pub const RESET_VALUE: u8 = 0x0f;
/// CMOS index of the RTC century byte.
pub const RTC_CENTURY: u8 = 0x32;

/// What the tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// APIC IDs of the present CPUs, in CPU index order (the first is the BSP).
    pub apic_ids: Vec<u32>,
    /// Whether COM1 exists (it gets a PNP0501 device in the DSDT).
    pub com1: bool,
    /// The PCI host bridge to describe, if any.
    pub pci: PciHostBridge,
    /// virtio-mmio transports with a device, announced as LNRO0005 devices.
    pub virtio_mmio: Vec<VirtioMmioDevice>,
    /// Whether the DSDT offers \_S3 (suspend to RAM).
    pub s3: bool,
    /// Whether the machine has the i8042: PS/2 keyboard and mouse devices (PNP0303, PNP0F13)
    /// in the DSDT and the 8042 flag in the FADT, as QEMU. SeaBIOS sets the keyboard up only
    /// when the DSDT has it, and Linux's i8042 driver looks for the PNP devices first.
    pub i8042: bool,
}

/// One virtio-mmio transport as the DSDT describes it (QEMU microvm: `VRnn`, `_HID`
/// "LNRO0005", `_UID` = transport index, `_CRS` = register window and level interrupt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// Transport index (the nn of `VRnn` and the `_UID`).
    pub index: u8,
    pub base: u32,
    pub size: u32,
    /// GSI (level-triggered, active high).
    pub gsi: u32,
}

/// The root PCI bridge the DSDT describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciHostBridge {
    /// No PCI (microvm).
    None,
    /// i440FX: a conventional PCI root bridge (PNP0A03).
    Pci,
    /// Q35: a PCI Express root bridge (PNP0A08, compatible with PNP0A03).
    Pcie,
}

/// Errors building or writing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI tables need {need:#x} bytes from {start:#x}, past the end of the BIOS area at {end:#x}")]
    TooLarge { start: u64, need: u64, end: u64 },
    #[error("no CPUs to describe in the MADT")]
    NoCpus,
    #[error("writing ACPI table {table} to guest memory at {addr:#x}")]
    GuestMemory {
        table: String,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// One table at its guest-physical address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedTable {
    pub name: String,
    pub addr: u64,
    pub bytes: Vec<u8>,
}

/// The 8-character OEM table ID QEMU-style: "RVMM" followed by the signature.
fn oem_table_id(sig: &[u8; 4]) -> [u8; 8] {
    let mut id = *b"RVMM    ";
    id[4..].copy_from_slice(sig);
    id
}

/// A table header with rvmm's OEM fields, ready for `append_slice`.
pub(crate) fn sdt(sig: &[u8; 4], revision: u8) -> Sdt {
    Sdt::new(*sig, 36, revision, OEM_ID, oem_table_id(sig), OEM_REVISION)
}

fn io_gas(bit_width: u8, port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        bit_width,
        0,
        AccessSize::Undefined,
        u64::from(port),
    )
}

/// IAPC_BOOT_ARCH bit 1: the machine has an 8042 keyboard controller.
const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;

/// The FADT: full (not hardware-reduced) ACPI, since the guest gets the PM timer, fixed
/// power button and PM1 registers; values as QEMU q35's FADT.
/// With `i8042`, IAPC_BOOT_ARCH says "8042" (ACPI 6.5 table 5.10, bit 1), as QEMU.
pub fn fadt(dsdt_addr: u64, facs_addr: u64, i8042: bool) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, oem_table_id(b"FACP"), OEM_REVISION)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::RtcS4)
        .flag(Flags::ResetRegSup)
        .flag(Flags::UsePlatformClock);
    // Both the 32- and 64-bit pointers, equal, as ACPICA prefers when both are present.
    f.firmware_ctrl = (facs_addr as u32).into();
    f.x_firmware_ctrl = facs_addr.into();
    f.dsdt = (dsdt_addr as u32).into();
    f.x_dsdt = dsdt_addr.into();
    f.sci_int = SCI_IRQ.into();
    f.pm1a_evt_blk = u32::from(PM1A_EVT_BLK).into();
    f.pm1a_cnt_blk = u32::from(PM1A_CNT_BLK).into();
    f.pm_tmr_blk = u32::from(PM_TMR_BLK).into();
    f.gpe0_blk = u32::from(GPE0_BLK).into();
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    f.pm_tmr_len = 4;
    f.gpe0_blk_len = GPE0_BLK_LEN;
    // No C2/C3 states (latencies above 100/1000 us disable them).
    f.p_lvl2_lat = 0x0fff.into();
    f.p_lvl3_lat = 0x0fff.into();
    f.century = RTC_CENTURY;
    f.x_pm1a_evt_blk = io_gas(32, PM1A_EVT_BLK);
    f.x_pm1a_cnt_blk = io_gas(16, PM1A_CNT_BLK);
    f.x_pm_tmr_blk = io_gas(32, PM_TMR_BLK);
    f.x_gpe0_blk = io_gas(GPE0_BLK_LEN * 8, GPE0_BLK);
    f.reset_reg = io_gas(8, RESET_PORT);
    f.reset_value = RESET_VALUE;
    if i8042 {
        f.iapc_boot_arch = IAPC_BOOT_ARCH_8042.into();
    }
    let mut bytes = Vec::new();
    f.finalize().to_aml_bytes(&mut bytes);
    bytes
}

/// The FACS: no firmware waking vector, no global lock owner; 64 bytes.
pub fn facs() -> Vec<u8> {
    let mut bytes = Vec::new();
    acpi_tables::facs::FACS::new().to_aml_bytes(&mut bytes);
    bytes
}

/// Rounds `addr` up to a multiple of the power of two `align`.
fn align(addr: u64, align: u64) -> u64 {
    (addr + align - 1) & !(align - 1)
}

/// Lays out every table but the RSDP from `start` (below `end`); returns them with the XSDT
/// first. Pointers between tables are the addresses they get here.
pub(crate) fn place_tables(
    config: &AcpiConfig,
    start: u64,
    end: u64,
) -> Result<Vec<PlacedTable>, AcpiError> {
    if config.apic_ids.is_empty() {
        return Err(AcpiError::NoCpus);
    }
    let mut next = start;
    let mut place =
        |name: &str, bytes: Vec<u8>, alignment: u64| -> Result<PlacedTable, AcpiError> {
            let addr = align(next, alignment);
            let stop = addr + bytes.len() as u64;
            if stop > end {
                return Err(AcpiError::TooLarge {
                    start,
                    need: stop - start,
                    end,
                });
            }
            next = stop;
            Ok(PlacedTable {
                name: name.to_string(),
                addr,
                bytes,
            })
        };
    // The FACS must be 64-byte aligned (ACPI 6.5 section 5.2.10).
    let facs = place("FACS", facs(), 64)?;
    let dsdt = place("DSDT", dsdt(config), 16)?;
    let fadt = place("FACP", fadt(dsdt.addr, facs.addr, config.i8042), 16)?;
    let madt = place("APIC", madt(&config.apic_ids), 16)?;
    let mut xsdt = XSDT::new(OEM_ID, oem_table_id(b"XSDT"), OEM_REVISION);
    xsdt.add_entry(fadt.addr);
    xsdt.add_entry(madt.addr);
    let mut xsdt_bytes = Vec::new();
    xsdt.to_aml_bytes(&mut xsdt_bytes);
    let xsdt = place("XSDT", xsdt_bytes, 16)?;
    Ok(vec![xsdt, fadt, facs, madt, dsdt])
}

/// The RSDP (revision 2) pointing at the XSDT at `xsdt`.
pub(crate) fn rsdp(xsdt: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    Rsdp::new(OEM_ID, xsdt).to_aml_bytes(&mut bytes);
    bytes
}

/// Builds every table and lays them out from [`RSDP_ADDR`]; the RSDP is the first entry.
pub fn build_tables(config: &AcpiConfig) -> Result<Vec<PlacedTable>, AcpiError> {
    let start = align(RSDP_ADDR + Rsdp::len() as u64, 64);
    let tables = place_tables(config, start, ACPI_TABLES_END)?;
    let rsdp = PlacedTable {
        name: "RSDP".into(),
        addr: RSDP_ADDR,
        bytes: rsdp(tables[0].addr),
    };
    Ok(std::iter::once(rsdp).chain(tables).collect())
}

/// Where [`write_acpi_tables`] puts the FACS, whose waking vector the VMM reads at an S3
/// wake-up without firmware.
pub fn facs_addr(config: &AcpiConfig) -> Option<u64> {
    let tables = build_tables(config).ok()?;
    tables.iter().find(|t| t.name == "FACS").map(|t| t.addr)
}

/// FACS fields (ACPI 6.5 table 5.14): Firmware_Waking_Vector (u32), X_Firmware_Waking_Vector
/// (u64) and OSPM Flags (u32, bit 0 = 64BIT_WAKE_F).
pub const FACS_WAKING_VECTOR: u64 = 12;
pub const FACS_X_WAKING_VECTOR: u64 = 24;
pub const FACS_OSPM_FLAGS: u64 = 36;
pub const FACS_64BIT_WAKE: u32 = 1;

/// Builds the tables, writes them to guest memory and returns the RSDP address.
pub fn write_acpi_tables<M: GuestMemoryBackend>(
    mem: &M,
    config: &AcpiConfig,
) -> Result<u64, AcpiError> {
    for t in build_tables(config)? {
        mem.write_slice(&t.bytes, GuestAddress(t.addr))
            .map_err(|source| AcpiError::GuestMemory {
                table: t.name.clone(),
                addr: t.addr,
                source,
            })?;
    }
    Ok(RSDP_ADDR)
}

/// Offset of `rsdp_paddr` in `struct hvm_start_info` (Xen start_info.h, all versions).
const PVH_RSDP_OFFSET: u64 = 32;
/// Offset of `acpi_rsdp_addr` in `struct boot_params` (Linux zero-page.rst, protocol 2.14+).
const ZERO_PAGE_RSDP_OFFSET: u64 = 0x70;

/// Tells a kernel booted through `entry` where the RSDP is: PVH `hvm_start_info.rsdp_paddr`
/// or Linux `boot_params.acpi_rsdp_addr`. Multiboot has no field: those guests scan.
pub fn publish_rsdp<M: GuestMemoryBackend>(
    mem: &M,
    entry: &crate::BootEntry,
    rsdp: u64,
) -> Result<(), AcpiError> {
    let addr = match entry.protocol {
        crate::BootProtocol::Pvh => entry.rbx + PVH_RSDP_OFFSET,
        crate::BootProtocol::BzImage | crate::BootProtocol::Elf64Linux => {
            entry.rsi + ZERO_PAGE_RSDP_OFFSET
        }
        crate::BootProtocol::Multiboot => return Ok(()),
    };
    mem.write_obj(rsdp, GuestAddress(addr))
        .map_err(|source| AcpiError::GuestMemory {
            table: "RSDP address".into(),
            addr,
            source,
        })
}

#[cfg(test)]
mod tests;
