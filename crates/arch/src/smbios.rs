//! SMBIOS tables for PC firmware, as QEMU 7.2 hands them to SeaBIOS through fw_cfg: the
//! structures in `etc/smbios/smbios-tables` and the entry point in `etc/smbios/smbios-anchor`
//! (layouts: DMTF DSP0134 3.x; values: QEMU hw/smbios/smbios.c `smbios_get_tables`).
//!
//! The entry point leaves the structure table address and both checksums zero: the firmware
//! copies the structures, fills in their address and checksums the anchor (SeaBIOS
//! src/fw/biostables.c `smbios_romfile_setup`). Type 0 (BIOS information) is built only when
//! `-smbios type=0` gives fields; otherwise SeaBIOS adds its own ("SeaBIOS", its version and
//! "04/01/2014"), as under QEMU.

use std::fmt::Write as _;

pub const TABLES_FILE: &str = "etc/smbios/smbios-tables";
pub const ANCHOR_FILE: &str = "etc/smbios/smbios-anchor";

/// The manufacturer QEMU names in types 1, 2, 3, 4 and 17.
pub const MANUFACTURER: &str = "QEMU";

/// QEMU makes one DIMM (type 17) per 16 GiB of RAM.
const MAX_DIMM_SIZE: u64 = 16 << 30;
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Type 16 maximum capacity in KiB; larger arrays use the extended field (DSP0134 7.17).
const MAX_T16_STD_KIB: u64 = 0x8000_0000;
/// Type 17 size in MiB; larger devices use the extended field (DSP0134 7.18.5).
const MAX_T17_STD_MIB: u64 = 0x7fff;
/// "Not provided" for memory error information handles.
const NO_ERROR_INFO: u16 = 0xfffe;
/// Type 4 cache handles: none.
const NO_HANDLE: u16 = 0xffff;
/// QEMU's default processor speeds in MHz (SVVP wants them known).
const DEFAULT_CPU_SPEED: u16 = 2000;

/// Handles as QEMU numbers them: type << 8, plus the instance.
const T0_HANDLE: u16 = 0x000;
const T1_HANDLE: u16 = 0x100;
const T2_HANDLE: u16 = 0x200;
const T3_HANDLE: u16 = 0x300;
const T4_HANDLE: u16 = 0x400;
const T11_HANDLE: u16 = 0xe00;
const T16_HANDLE: u16 = 0x1000;
const T17_HANDLE: u16 = 0x1100;
const T19_HANDLE: u16 = 0x1300;
const T32_HANDLE: u16 = 0x2000;
const T127_HANDLE: u16 = 0x7f00;

/// Structure lengths (DSP0134: the versions QEMU 7.2 builds).
const T0_LEN: usize = 0x18;
const T1_LEN: usize = 0x1b;
const T2_LEN: usize = 0x0f;
const T3_LEN: usize = 0x16;
const T4_LEN_V28: usize = 0x2a;
const T4_LEN_V30: usize = 0x30;
const T11_LEN: usize = 0x05;
const T16_LEN: usize = 0x17;
const T17_LEN: usize = 0x28;
const T19_LEN: usize = 0x1f;
const T32_LEN: usize = 0x0b;
const T127_LEN: usize = 0x04;

/// Entry point lengths (DSP0134 5.2.1 and 5.2.2).
pub const ANCHOR21_LEN: usize = 0x1f;
pub const ANCHOR30_LEN: usize = 0x18;

/// Why the tables cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SmbiosError {
    #[error(
        "SMBIOS tables are {len} bytes, more than the {max} a 32-bit entry point can describe"
    )]
    TablesTooLong { len: usize, max: usize },
    #[error("SMBIOS type {ty}: string '{value}' contains a NUL byte")]
    NulInString { ty: u8, value: String },
}

/// `-smbios type=0`: BIOS information. Its presence makes rvmm build type 0 instead of the
/// firmware.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BiosFields {
    pub vendor: Option<String>,
    pub version: Option<String>,
    pub date: Option<String>,
    /// `release=major.minor`.
    pub release: Option<(u8, u8)>,
    pub uefi: bool,
}

/// `-smbios type=1`: system information; `uuid` is also `-uuid`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemFields {
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub sku: Option<String>,
    pub family: Option<String>,
    /// RFC 4122 byte order (as printed); type 1 stores it in SMBIOS 2.6 wire order.
    pub uuid: Option<[u8; 16]>,
}

/// `-smbios type=2`: baseboard information. Its presence makes rvmm build type 2.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaseboardFields {
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub asset: Option<String>,
    pub location: Option<String>,
}

/// `-smbios type=3`: chassis information.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChassisFields {
    pub manufacturer: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub asset: Option<String>,
    pub sku: Option<String>,
}

/// `-smbios type=4`: processor information, one structure per socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessorFields {
    /// Socket designation prefix (default "CPU"), followed by the socket number.
    pub sock_pfx: Option<String>,
    pub manufacturer: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub asset: Option<String>,
    pub part: Option<String>,
    pub max_speed: Option<u16>,
    pub current_speed: Option<u16>,
}

/// `-smbios type=17`: memory devices, one per 16 GiB DIMM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryDeviceFields {
    /// Device locator prefix (default "DIMM"), followed by a space and the DIMM number.
    pub loc_pfx: Option<String>,
    pub bank: Option<String>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub asset: Option<String>,
    pub part: Option<String>,
    /// MT/s; 0 is unknown.
    pub speed: Option<u16>,
}

/// What the user gave with `-smbios` and `-uuid`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmbiosFields {
    pub bios: Option<BiosFields>,
    pub system: SystemFields,
    pub baseboard: Option<BaseboardFields>,
    pub chassis: ChassisFields,
    pub processor: ProcessorFields,
    /// `-smbios type=11,value=...`: OEM strings (type 11 when not empty).
    pub oem_strings: Vec<String>,
    pub memory_device: MemoryDeviceFields,
}

/// The entry point the firmware publishes (`-machine smbios-entry-point-type=32|64`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EntryPointType {
    /// SMBIOS 2.1 "_SM_" entry point, structures below 4 GiB (QEMU 7.2's default on pc/q35).
    #[default]
    Bits32,
    /// SMBIOS 3.0 "_SM3_" entry point.
    Bits64,
}

/// The machine the tables describe.
#[derive(Clone, Debug)]
pub struct SmbiosConfig<'a> {
    pub fields: &'a SmbiosFields,
    /// The machine's description, QEMU's default type 1 product ("Standard PC (...)").
    pub product: &'a str,
    /// The versioned machine name, QEMU's default version in types 1, 2, 3 and 4.
    pub version: &'a str,
    /// `-smp` topology: sockets, dies per socket, cores per die, threads per core.
    pub sockets: u32,
    pub dies: u32,
    pub cores: u32,
    pub threads: u32,
    /// CPUID leaf 1 EAX and EDX of the boot CPU (type 4 processor ID).
    pub cpuid_version: u32,
    pub cpuid_features: u32,
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// The RAM ranges of the e820 map, `(address, length)` (one type 19 each).
    pub ram_ranges: &'a [(u64, u64)],
    pub entry_point: EntryPointType,
}

/// The two fw_cfg files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbiosBlobs {
    /// `etc/smbios/smbios-tables`: the structures, ending with type 127.
    pub tables: Vec<u8>,
    /// `etc/smbios/smbios-anchor`: the entry point, address and checksums zero.
    pub anchor: Vec<u8>,
}

/// One structure being built: the formatted area, then its string set.
struct Structure {
    ty: u8,
    formatted: Vec<u8>,
    strings: Vec<u8>,
    count: u8,
}

impl Structure {
    fn new(ty: u8, handle: u16, len: usize) -> Self {
        let mut formatted = vec![0; len];
        formatted[0] = ty;
        formatted[1] = len as u8;
        formatted[2..4].copy_from_slice(&handle.to_le_bytes());
        Structure {
            ty,
            formatted,
            strings: Vec::new(),
            count: 0,
        }
    }

    fn u8(&mut self, offset: usize, value: u8) {
        self.formatted[offset] = value;
    }

    fn u16(&mut self, offset: usize, value: u16) {
        self.formatted[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }

    fn u32(&mut self, offset: usize, value: u32) {
        self.formatted[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, offset: usize, value: u64) {
        self.formatted[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Appends `value` to the string set; returns its number (strings are numbered from 1 in
    /// the order added, as QEMU adds them).
    fn push_string(&mut self, value: &str) -> Result<u8, SmbiosError> {
        if value.contains('\0') {
            return Err(SmbiosError::NulInString {
                ty: self.ty,
                value: value.to_string(),
            });
        }
        self.strings.extend_from_slice(value.as_bytes());
        self.strings.push(0);
        self.count += 1;
        Ok(self.count)
    }

    /// A string field at `offset`: 0 (none) when absent or empty, as QEMU leaves it.
    fn string(&mut self, offset: usize, value: Option<&str>) -> Result<(), SmbiosError> {
        let index = match value {
            Some(v) if !v.is_empty() => self.push_string(v)?,
            _ => 0,
        };
        self.formatted[offset] = index;
        Ok(())
    }

    /// The structure with its string set closed by a NUL (two NULs when there are none).
    fn finish(mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.formatted);
        if self.strings.is_empty() {
            out.extend_from_slice(&[0, 0]);
        } else {
            out.append(&mut self.strings);
            out.push(0);
        }
        out
    }
}

/// The structures, their count and the largest one, as the entry point describes them.
#[derive(Default)]
struct TableSet {
    bytes: Vec<u8>,
    count: u16,
    max_size: usize,
}

impl TableSet {
    fn add(&mut self, s: Structure) {
        let bytes = s.finish();
        self.max_size = self.max_size.max(bytes.len());
        self.count += 1;
        self.bytes.extend_from_slice(&bytes);
    }
}

fn or<'a>(value: &'a Option<String>, default: &'a str) -> Option<&'a str> {
    Some(value.as_deref().unwrap_or(default))
}

/// Type 0, BIOS information (DSP0134 7.1), only when `-smbios type=0` was given.
fn bios(f: &BiosFields) -> Result<Structure, SmbiosError> {
    let mut s = Structure::new(0, T0_HANDLE, T0_LEN);
    s.string(0x04, f.vendor.as_deref())?;
    s.string(0x05, f.version.as_deref())?;
    // SeaBIOS's own type 0 gives the BIOS segment as 0xe800.
    s.u16(0x06, 0xe800);
    s.string(0x08, f.date.as_deref())?;
    // BIOS characteristics not supported (bit 3).
    s.u64(0x0a, 0x08);
    // Extension byte 2: targeted content distribution (bit 2), virtual machine (bit 4).
    s.u8(0x13, 0x14 | if f.uefi { 0x08 } else { 0 });
    let (major, minor) = f.release.unwrap_or((0, 0));
    s.u8(0x14, major);
    s.u8(0x15, minor);
    // Embedded controller firmware release: none.
    s.u8(0x16, 0xff);
    s.u8(0x17, 0xff);
    Ok(s)
}

/// Type 1, system information (DSP0134 7.2).
fn system(c: &SmbiosConfig) -> Result<Structure, SmbiosError> {
    let f = &c.fields.system;
    let mut s = Structure::new(1, T1_HANDLE, T1_LEN);
    s.string(0x04, or(&f.manufacturer, MANUFACTURER))?;
    s.string(0x05, or(&f.product, c.product))?;
    s.string(0x06, or(&f.version, c.version))?;
    s.string(0x07, f.serial.as_deref())?;
    if let Some(uuid) = &f.uuid {
        s.formatted[0x08..0x18].copy_from_slice(&uuid_wire_order(uuid));
    }
    // Wake-up type: power switch.
    s.u8(0x18, 0x06);
    s.string(0x19, f.sku.as_deref())?;
    s.string(0x1a, f.family.as_deref())?;
    Ok(s)
}

/// SMBIOS 2.6+ stores the UUID's first three fields little-endian (DSP0134 7.2.1).
pub fn uuid_wire_order(uuid: &[u8; 16]) -> [u8; 16] {
    let mut w = *uuid;
    w[0..4].reverse();
    w[4..6].reverse();
    w[6..8].reverse();
    w
}

/// Type 2, baseboard information (DSP0134 7.3), only when `-smbios type=2` was given.
fn baseboard(c: &SmbiosConfig, f: &BaseboardFields) -> Result<Structure, SmbiosError> {
    let mut s = Structure::new(2, T2_HANDLE, T2_LEN);
    s.string(0x04, or(&f.manufacturer, MANUFACTURER))?;
    s.string(0x05, or(&f.product, c.product))?;
    s.string(0x06, or(&f.version, c.version))?;
    s.string(0x07, f.serial.as_deref())?;
    s.string(0x08, f.asset.as_deref())?;
    // Feature flags: hosting board.
    s.u8(0x09, 0x01);
    s.string(0x0a, f.location.as_deref())?;
    s.u16(0x0b, T3_HANDLE);
    // Board type: motherboard.
    s.u8(0x0d, 0x0a);
    Ok(s)
}

/// Type 3, system enclosure (DSP0134 7.4).
fn chassis(c: &SmbiosConfig) -> Result<Structure, SmbiosError> {
    let f = &c.fields.chassis;
    let mut s = Structure::new(3, T3_HANDLE, T3_LEN);
    s.string(0x04, or(&f.manufacturer, MANUFACTURER))?;
    // Type: other.
    s.u8(0x05, 0x01);
    s.string(0x06, or(&f.version, c.version))?;
    s.string(0x07, f.serial.as_deref())?;
    s.string(0x08, f.asset.as_deref())?;
    // Boot-up, power supply and thermal states: safe; security status: unknown.
    s.u8(0x09, 0x03);
    s.u8(0x0a, 0x03);
    s.u8(0x0b, 0x03);
    s.u8(0x0c, 0x02);
    s.string(0x15, f.sku.as_deref())?;
    Ok(s)
}

/// Type 4, processor information (DSP0134 7.5), for socket `socket`.
fn processor(c: &SmbiosConfig, socket: u32) -> Result<Structure, SmbiosError> {
    let f = &c.fields.processor;
    let v30 = c.entry_point == EntryPointType::Bits64;
    let len = if v30 { T4_LEN_V30 } else { T4_LEN_V28 };
    let mut s = Structure::new(4, T4_HANDLE + socket as u16, len);
    // QEMU's "%s%2x": the socket number in hex, padded to two columns ("CPU 0").
    let mut designation = f.sock_pfx.clone().unwrap_or_else(|| "CPU".into());
    let _ = write!(designation, "{socket:2x}");
    s.string(0x04, Some(&designation))?;
    // Processor type: central processor; family: other.
    s.u8(0x05, 0x03);
    s.u8(0x06, 0x01);
    s.string(0x07, or(&f.manufacturer, MANUFACTURER))?;
    s.u32(0x08, c.cpuid_version);
    s.u32(0x0c, c.cpuid_features);
    s.string(0x10, or(&f.version, c.version))?;
    s.u16(0x14, f.max_speed.unwrap_or(DEFAULT_CPU_SPEED));
    s.u16(0x16, f.current_speed.unwrap_or(DEFAULT_CPU_SPEED));
    // Status: socket populated, CPU enabled; upgrade: other.
    s.u8(0x18, 0x41);
    s.u8(0x19, 0x01);
    s.u16(0x1a, NO_HANDLE);
    s.u16(0x1c, NO_HANDLE);
    s.u16(0x1e, NO_HANDLE);
    s.string(0x20, f.serial.as_deref())?;
    s.string(0x21, f.asset.as_deref())?;
    s.string(0x22, f.part.as_deref())?;
    // Per socket, as QEMU 7.2.x stable counts them (the 8.1 topology fixes are backported).
    let cores = c.dies.saturating_mul(c.cores);
    let threads = cores.saturating_mul(c.threads);
    let clamp = |n: u32| n.min(0xff) as u8;
    s.u8(0x23, clamp(cores));
    s.u8(0x24, clamp(cores));
    s.u8(0x25, clamp(threads));
    // Characteristics: unknown; family 2: other.
    s.u16(0x26, 0x02);
    s.u16(0x28, 0x01);
    if v30 {
        let clamp16 = |n: u32| n.min(0xffff) as u16;
        s.u16(0x2a, clamp16(cores));
        s.u16(0x2c, clamp16(cores));
        s.u16(0x2e, clamp16(threads));
    }
    Ok(s)
}

/// Type 11, OEM strings (DSP0134 7.12).
fn oem_strings(values: &[String]) -> Result<Structure, SmbiosError> {
    let mut s = Structure::new(11, T11_HANDLE, T11_LEN);
    s.u8(0x04, values.len().min(0xff) as u8);
    for v in values {
        s.push_string(v)?;
    }
    Ok(s)
}

/// Type 16, physical memory array (DSP0134 7.17).
fn memory_array(ram_size: u64, dimms: u64) -> Structure {
    let mut s = Structure::new(16, T16_HANDLE, T16_LEN);
    // Location: other; use: system memory; error correction: multi-bit ECC (as SeaBIOS).
    s.u8(0x04, 0x01);
    s.u8(0x05, 0x03);
    s.u8(0x06, 0x06);
    let kib = ram_size.div_ceil(KIB);
    if kib < MAX_T16_STD_KIB {
        s.u32(0x07, kib as u32);
    } else {
        s.u32(0x07, MAX_T16_STD_KIB as u32);
        s.u64(0x0f, ram_size);
    }
    s.u16(0x0b, NO_ERROR_INFO);
    s.u16(0x0d, dimms.min(0xffff) as u16);
    s
}

/// Type 17, memory device (DSP0134 7.18), DIMM `index` of `size` bytes.
fn memory_device(c: &SmbiosConfig, index: u64, size: u64) -> Result<Structure, SmbiosError> {
    let f = &c.fields.memory_device;
    let mut s = Structure::new(17, T17_HANDLE.wrapping_add(index as u16), T17_LEN);
    s.u16(0x04, T16_HANDLE);
    s.u16(0x06, NO_ERROR_INFO);
    // Total and data width: unknown.
    s.u16(0x08, 0xffff);
    s.u16(0x0a, 0xffff);
    let mib = size.div_ceil(MIB);
    if mib < MAX_T17_STD_MIB {
        s.u16(0x0c, mib as u16);
    } else {
        s.u16(0x0c, MAX_T17_STD_MIB as u16);
        s.u32(0x1c, mib.min(u64::from(u32::MAX)) as u32);
    }
    // Form factor: DIMM.
    s.u8(0x0e, 0x09);
    let locator = format!("{} {index}", f.loc_pfx.as_deref().unwrap_or("DIMM"));
    s.string(0x10, Some(&locator))?;
    s.string(0x11, f.bank.as_deref())?;
    // Memory type: RAM; type detail: other.
    s.u8(0x12, 0x07);
    s.u16(0x13, 0x02);
    let speed = f.speed.unwrap_or(0);
    s.u16(0x15, speed);
    s.string(0x17, or(&f.manufacturer, MANUFACTURER))?;
    s.string(0x18, f.serial.as_deref())?;
    s.string(0x19, f.asset.as_deref())?;
    s.string(0x1a, f.part.as_deref())?;
    s.u16(0x20, speed);
    Ok(s)
}

/// Type 19, memory array mapped address (DSP0134 7.20), for RAM range `index`.
fn mapped_range(index: usize, start: u64, len: u64) -> Structure {
    let mut s = Structure::new(19, T19_HANDLE.wrapping_add(index as u16), T19_LEN);
    let end = start + len - 1;
    let (start_kib, end_kib) = (start / KIB, end / KIB);
    if start_kib < u64::from(u32::MAX) && end_kib < u64::from(u32::MAX) {
        s.u32(0x04, start_kib as u32);
        s.u32(0x08, end_kib as u32);
    } else {
        s.u32(0x04, u32::MAX);
        s.u32(0x08, u32::MAX);
        s.u64(0x0f, start);
        s.u64(0x17, end);
    }
    s.u16(0x0c, T16_HANDLE);
    // Partition width: one device per row.
    s.u8(0x0e, 1);
    s
}

/// Builds QEMU's structures (types 0 and 2 only when given, 1, 3, 4 per socket, 11 when
/// given, 16, 17 per DIMM, 19 per RAM range, 32, 127) and the entry point.
pub fn build(c: &SmbiosConfig) -> Result<SmbiosBlobs, SmbiosError> {
    let f = c.fields;
    let mut set = TableSet::default();
    if let Some(b) = &f.bios {
        set.add(bios(b)?);
    }
    set.add(system(c)?);
    if let Some(b) = &f.baseboard {
        set.add(baseboard(c, b)?);
    }
    set.add(chassis(c)?);
    // Every socket of the topology, hot-pluggable CPUs included.
    for socket in 0..c.sockets.max(1) {
        set.add(processor(c, socket)?);
    }
    if !f.oem_strings.is_empty() {
        set.add(oem_strings(&f.oem_strings)?);
    }
    let dimms = c.ram_size.div_ceil(MAX_DIMM_SIZE);
    set.add(memory_array(c.ram_size, dimms));
    for i in 0..dimms {
        let size = if i < dimms - 1 {
            MAX_DIMM_SIZE
        } else {
            (c.ram_size - 1) % MAX_DIMM_SIZE + 1
        };
        set.add(memory_device(c, i, size)?);
    }
    for (i, &(start, len)) in c.ram_ranges.iter().enumerate() {
        if len > 0 {
            set.add(mapped_range(i, start, len));
        }
    }
    // Type 32, system boot information (DSP0134 7.33): no errors.
    set.add(Structure::new(32, T32_HANDLE, T32_LEN));
    // Type 127, end of table (DSP0134 7.46).
    set.add(Structure::new(127, T127_HANDLE, T127_LEN));
    let anchor = match c.entry_point {
        EntryPointType::Bits32 => anchor21(&set)?,
        EntryPointType::Bits64 => anchor30(&set),
    };
    Ok(SmbiosBlobs {
        tables: set.bytes,
        anchor,
    })
}

/// The SMBIOS 2.1 (32-bit) entry point, declaring version 2.8 (DSP0134 5.2.1).
fn anchor21(set: &TableSet) -> Result<Vec<u8>, SmbiosError> {
    let len = u16::try_from(set.bytes.len()).map_err(|_| SmbiosError::TablesTooLong {
        len: set.bytes.len(),
        max: usize::from(u16::MAX),
    })?;
    let mut a = vec![0; ANCHOR21_LEN];
    a[0..4].copy_from_slice(b"_SM_");
    a[5] = ANCHOR21_LEN as u8;
    a[6] = 2;
    a[7] = 8;
    a[8..10].copy_from_slice(&(set.max_size.min(0xffff) as u16).to_le_bytes());
    a[0x10..0x15].copy_from_slice(b"_DMI_");
    a[0x16..0x18].copy_from_slice(&len.to_le_bytes());
    a[0x1c..0x1e].copy_from_slice(&set.count.to_le_bytes());
    a[0x1e] = 0x28;
    Ok(a)
}

/// The SMBIOS 3.0 (64-bit) entry point, declaring version 3.0 (DSP0134 5.2.2).
fn anchor30(set: &TableSet) -> Vec<u8> {
    let mut a = vec![0; ANCHOR30_LEN];
    a[0..5].copy_from_slice(b"_SM3_");
    a[6] = ANCHOR30_LEN as u8;
    a[7] = 3;
    a[8] = 0;
    a[0x0a] = 1;
    a[0x0c..0x10].copy_from_slice(&(set.bytes.len() as u32).to_le_bytes());
    a
}

/// What the firmware does to the anchor once the structures sit at `address`: fills in the
/// address and makes each checksummed range sum to zero (DSP0134 5.2).
pub fn finalize_anchor(anchor: &mut [u8], address: u64) {
    let sum = |b: &[u8]| b.iter().fold(0u8, |s, x| s.wrapping_add(*x));
    if anchor.starts_with(b"_SM3_") && anchor.len() >= ANCHOR30_LEN {
        anchor[0x10..0x18].copy_from_slice(&address.to_le_bytes());
        anchor[5] = 0;
        anchor[5] = sum(&anchor[..ANCHOR30_LEN]).wrapping_neg();
    } else if anchor.starts_with(b"_SM_") && anchor.len() >= ANCHOR21_LEN {
        anchor[0x18..0x1c].copy_from_slice(&(address as u32).to_le_bytes());
        anchor[0x15] = 0;
        anchor[0x15] = sum(&anchor[0x10..ANCHOR21_LEN]).wrapping_neg();
        anchor[4] = 0;
        anchor[4] = sum(&anchor[..0x10]).wrapping_neg();
    }
}

#[cfg(test)]
mod tests;
