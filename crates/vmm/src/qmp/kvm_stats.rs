//! QMP `query-stats` and `query-stats-schemas` for the `kvm` provider: KVM's binary statistics
//! (KVM_GET_STATS_FD, Documentation/virt/kvm/api.rst "KVM_GET_STATS_FD"), read the way QEMU 7.2
//! reads them (accel/kvm/kvm-all.c `query_stats`, `add_kvmschema_entry`). The descriptors are
//! taken at build time; reading them later is a pread on the VMM thread.

use serde_json::{json, Value};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

const TYPE_MASK: u32 = 0xf;
const UNIT_SHIFT: u32 = 4;
const UNIT_MASK: u32 = 0xf << UNIT_SHIFT;
const BASE_SHIFT: u32 = 8;
const BASE_MASK: u32 = 0xf << BASE_SHIFT;

/// One statistic's descriptor (`struct kvm_stats_desc`).
#[derive(Debug, Clone)]
struct Desc {
    name: String,
    flags: u32,
    exponent: i16,
    /// Number of u64 values.
    size: u16,
    /// Byte offset in the data block.
    offset: u32,
    bucket_size: u32,
}

impl Desc {
    fn kind(&self) -> Option<&'static str> {
        Some(match self.flags & TYPE_MASK {
            0 => "cumulative",
            1 => "instant",
            2 => "peak",
            3 => "linear-histogram",
            4 => "log2-histogram",
            _ => return None,
        })
    }

    /// None: no unit; Err: a unit QEMU does not know (the statistic is skipped).
    fn unit(&self) -> Result<Option<&'static str>, ()> {
        Ok(match (self.flags & UNIT_MASK) >> UNIT_SHIFT {
            0 => None,
            1 => Some("bytes"),
            2 => Some("seconds"),
            3 => Some("cycles"),
            4 => Some("boolean"),
            _ => return Err(()),
        })
    }

    fn base(&self) -> Option<u32> {
        match (self.flags & BASE_MASK) >> BASE_SHIFT {
            0 => Some(10),
            1 => Some(2),
            _ => None,
        }
    }

    /// Whether QEMU reports this statistic at all.
    fn known(&self) -> bool {
        self.kind().is_some() && self.unit().is_ok() && self.base().is_some()
    }
}

/// One VM's or vCPU's statistics descriptor with its parsed layout.
pub struct StatsFd {
    file: File,
    descs: Vec<Desc>,
    data_offset: u64,
    data_len: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

impl StatsFd {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let file = File::from(fd);
        let mut header = [0u8; 24];
        file.read_exact_at(&mut header, 0)?;
        let name_size = u32_at(&header, 4) as usize;
        let num_desc = u32_at(&header, 8) as usize;
        let desc_offset = u64::from(u32_at(&header, 16));
        let data_offset = u64::from(u32_at(&header, 20));
        let desc_len = 16 + name_size;
        if num_desc > 4096 || name_size > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "implausible KVM statistics header",
            ));
        }
        let mut raw = vec![0u8; desc_len * num_desc];
        file.read_exact_at(&mut raw, desc_offset)?;
        let mut descs = Vec::with_capacity(num_desc);
        let mut data_len = 0usize;
        for d in raw.chunks_exact(desc_len) {
            let name = &d[16..];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let desc = Desc {
                flags: u32_at(d, 0),
                exponent: i16::from_ne_bytes([d[4], d[5]]),
                size: u16::from_ne_bytes([d[6], d[7]]),
                offset: u32_at(d, 8),
                bucket_size: u32_at(d, 12),
                name: String::from_utf8_lossy(&name[..end]).into_owned(),
            };
            data_len = data_len.max(desc.offset as usize + 8 * usize::from(desc.size));
            descs.push(desc);
        }
        Ok(StatsFd {
            file,
            descs,
            data_offset,
            data_len,
        })
    }

    /// `StatsSchemaValue`s, in QEMU's order (it prepends: the last descriptor first).
    pub fn schema(&self) -> Vec<Value> {
        self.descs
            .iter()
            .rev()
            .filter(|d| d.known())
            .map(|d| {
                let mut v = json!({"name": d.name, "type": d.kind(), "exponent": d.exponent});
                if let Ok(Some(unit)) = d.unit() {
                    v["unit"] = json!(unit);
                }
                if d.exponent != 0 {
                    v["base"] = json!(d.base());
                }
                if d.flags & TYPE_MASK == 3 {
                    v["bucket-size"] = json!(d.bucket_size);
                }
                v
            })
            .collect()
    }

    /// Current values of the statistics `names` lets through (all without a filter).
    pub fn values(&self, names: Option<&[String]>) -> io::Result<Vec<Value>> {
        let mut data = vec![0u8; self.data_len];
        self.file.read_exact_at(&mut data, self.data_offset)?;
        let word = |at: usize| {
            data.get(at..at + 8)
                .map_or(0, |s| u64::from_ne_bytes(s.try_into().unwrap_or_default()))
        };
        Ok(self
            .descs
            .iter()
            .rev()
            .filter(|d| d.known())
            .filter(|d| names.is_none_or(|n| n.contains(&d.name)))
            .map(|d| {
                let at = d.offset as usize;
                let value = if d.unit() == Ok(Some("boolean")) {
                    json!(word(at) != 0)
                } else if d.size == 1 {
                    json!(word(at))
                } else {
                    // QEMU prepends each bucket: the list comes out last bucket first.
                    let list: Vec<u64> = (0..usize::from(d.size))
                        .rev()
                        .map(|i| word(at + 8 * i))
                        .collect();
                    json!(list)
                };
                json!({"name": d.name, "value": value})
            })
            .collect())
    }
}

/// The VM's and each vCPU's statistics (None where the kernel has no KVM_GET_STATS_FD).
#[derive(Default)]
pub struct KvmStats {
    pub vm: Option<StatsFd>,
    pub vcpus: Vec<Option<StatsFd>>,
}

impl KvmStats {
    /// The descriptors of `vm` and `vcpus`, taken before the sandbox (a kernel without
    /// KVM_GET_STATS_FD leaves `query-stats` empty, as QEMU's).
    pub fn open(vm: &rvmm_hypervisor::Vm, vcpus: &[rvmm_hypervisor::Vcpu]) -> Self {
        let take = |fd: Result<OwnedFd, rvmm_hypervisor::HvError>| {
            fd.map_err(|e| tracing::debug!("KVM statistics: {e}"))
                .ok()
                .and_then(|fd| {
                    StatsFd::new(fd)
                        .map_err(|e| tracing::debug!("KVM statistics: {e}"))
                        .ok()
                })
        };
        KvmStats {
            vm: take(vm.stats_fd()),
            vcpus: vcpus.iter().map(|v| take(v.stats_fd())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_vm_and_vcpu() {
        let Ok(hv) = rvmm_hypervisor::Hypervisor::open() else {
            eprintln!("skipped: no /dev/kvm");
            return;
        };
        let vm = hv.create_vm().unwrap();
        let Ok(fd) = vm.stats_fd() else {
            eprintln!("skipped: this kernel has no KVM_GET_STATS_FD");
            return;
        };
        let stats = StatsFd::new(fd).unwrap();
        let schema = stats.schema();
        assert!(
            schema.iter().any(|s| s["name"] == "remote_tlb_flush"),
            "{schema:?}"
        );
        let values = stats.values(None).unwrap();
        assert_eq!(values.len(), schema.len());
        let vcpu = vm.create_vcpu(0).unwrap();
        let stats = StatsFd::new(vcpu.stats_fd().unwrap()).unwrap();
        let names = ["halt_exits".to_string(), "exits".to_string()];
        let values = stats.values(Some(&names)).unwrap();
        assert_eq!(values.len(), 2, "{values:?}");
        assert!(values.iter().all(|v| v["value"].is_u64()));
    }
}
