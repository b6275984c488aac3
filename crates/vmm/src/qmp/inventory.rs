//! What libvirt asks about a running VM besides its run state, gathered once at build time
//! (before the sandbox closes the file system): chardevs and their host names, block nodes and
//! the devices on them, `-device` ids, and the vCPU's QOM properties (its CPUID feature bits).

use rvmm_arch::cpu::{CpuModel, FEATURE_WORDS};
use rvmm_cli::{DriveConfig, VirtioDeviceConfig, VmConfig};
use rvmm_hypervisor::CpuId;

/// One chardev as `query-chardev` reports it.
#[derive(Debug, Clone)]
pub struct ChardevInfo {
    pub label: String,
    pub filename: String,
}

/// One drive: its top node and the protocol node under it.
#[derive(Debug, Clone)]
pub struct DriveInfo {
    /// `-drive id=` (QEMU's BlockBackend name); empty for `-blockdev` drives.
    pub device: String,
    /// The top node's name (`-blockdev node-name=`, or QEMU's generated one).
    pub node_name: String,
    /// The protocol node under it.
    pub file_node_name: String,
    /// The device's QOM path, or "" when it has no `id=`.
    pub qdev: String,
    pub file: String,
    /// "raw" or "qcow2".
    pub format: String,
    pub readonly: bool,
    pub direct: bool,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Bytes the image file takes on the host.
    pub actual_size: u64,
    /// The file's length (the protocol node's virtual size).
    pub file_length: u64,
    pub removable: bool,
}

/// The guest's vCPU 0 as QOM shows it.
#[derive(Debug, Clone)]
pub struct CpuInfo {
    /// QEMU's type name, `host-x86_64-cpu`.
    pub type_name: String,
    /// Every named CPUID feature bit rvmm knows, and whether the guest has it.
    pub features: Vec<(&'static str, bool)>,
    /// Features the command line asked for that the guest does not have.
    pub unavailable: Vec<&'static str>,
}

/// Everything above, for the QMP queries.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub chardevs: Vec<ChardevInfo>,
    pub drives: Vec<DriveInfo>,
    /// `-device ...,id=ID`: (id, driver), QOM's `/machine/peripheral`.
    pub peripherals: Vec<(String, String)>,
    pub cpu: CpuInfo,
}

/// Guest size and host allocation of an image (qcow2: the header's size field).
fn sizes(path: &std::path::Path, format: &str) -> (u64, u64, u64) {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return (0, 0, 0);
    };
    let length = meta.len();
    let actual = meta.blocks() * 512;
    let virtual_size = if format == "qcow2" {
        let mut header = [0u8; 32];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut header))
            .map(|()| u64::from_be_bytes(header[24..32].try_into().unwrap_or_default()))
            .unwrap_or(0)
    } else {
        length
    };
    (virtual_size, actual, length)
}

fn drive_info(d: &DriveConfig, qdev: String, index: usize, removable: bool) -> DriveInfo {
    let format = d.format.clone().unwrap_or_else(|| "raw".into());
    let (virtual_size, actual_size, file_length) = sizes(&d.file, &format);
    DriveInfo {
        device: d.id.clone().unwrap_or_default(),
        node_name: d
            .node_name
            .clone()
            .unwrap_or_else(|| format!("#block{:03}", index * 2 + 1)),
        file_node_name: d
            .file_node_name
            .clone()
            .unwrap_or_else(|| format!("#block{:03}", index * 2)),
        qdev,
        file: d.file.display().to_string(),
        format,
        readonly: d.readonly,
        direct: d.direct,
        virtual_size,
        actual_size,
        file_length,
        removable,
    }
}

/// The guest's feature bits from its CPUID table.
fn cpu_info(config: &VmConfig, cpuid: &CpuId) -> CpuInfo {
    let entries = cpuid.as_slice();
    let mut features = Vec::new();
    let mut unavailable = Vec::new();
    for (word, w) in FEATURE_WORDS.iter().enumerate() {
        let value = entries
            .iter()
            .find(|e| e.function == w.leaf && w.subleaf.is_none_or(|s| e.index == s))
            .map(|e| match w.reg {
                rvmm_arch::cpu::Reg::Eax => e.eax,
                rvmm_arch::cpu::Reg::Ebx => e.ebx,
                rvmm_arch::cpu::Reg::Ecx => e.ecx,
                rvmm_arch::cpu::Reg::Edx => e.edx,
            })
            .unwrap_or(0);
        for (bit, name) in w.names.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let on = value & (1 << bit) != 0;
            features.push((*name, on));
            let asked = config
                .cpu
                .features
                .iter()
                .rev()
                .find(|s| s.feature.word == word && s.feature.mask & (1 << bit) != 0);
            if asked.is_some_and(|s| s.on) && !on {
                unavailable.push(*name);
            }
        }
    }
    let type_name = match &config.cpu.model {
        CpuModel::Host => "host-x86_64-cpu".to_string(),
        CpuModel::Max => "max-x86_64-cpu".to_string(),
        CpuModel::Named { name, .. } => format!("{name}-x86_64-cpu"),
    };
    CpuInfo {
        type_name,
        features,
        unavailable,
    }
}

impl Inventory {
    pub fn new(
        config: &VmConfig,
        monitors: &[(String, String)],
        serial_filename: Option<&str>,
        cpuid: &CpuId,
    ) -> Self {
        let mut chardevs = Vec::new();
        if let Some(filename) = serial_filename {
            chardevs.push(ChardevInfo {
                label: config
                    .serial_label
                    .clone()
                    .unwrap_or_else(|| "serial0".into()),
                filename: filename.to_string(),
            });
        }
        chardevs.extend(monitors.iter().map(|(label, filename)| ChardevInfo {
            label: label.clone(),
            filename: filename.clone(),
        }));
        let mut drives = Vec::new();
        for dev in &config.virtio {
            if let VirtioDeviceConfig::Block(d) = dev {
                drives.push(drive_info(d, String::new(), drives.len(), false));
            }
        }
        for dev in &config.virtio_pci {
            if let VirtioDeviceConfig::Block(d) = &dev.device {
                let qdev = dev
                    .pci
                    .id
                    .as_ref()
                    .map(|id| format!("/machine/peripheral/{id}/virtio-backend"))
                    .unwrap_or_default();
                drives.push(drive_info(d, qdev, drives.len(), false));
            }
        }
        for ide in &config.ide {
            if let Some(d) = &ide.drive {
                drives.push(drive_info(d, String::new(), drives.len(), ide.cdrom));
            }
        }
        Inventory {
            chardevs,
            drives,
            peripherals: config.peripherals.clone(),
            cpu: cpu_info(config, cpuid),
        }
    }
}
