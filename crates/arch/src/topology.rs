//! CPU topology: APIC IDs from `-smp sockets=,dies=,cores=,threads=`, as QEMU assigns them
//! (include/hw/i386/topology.h, `x86_apicid_from_cpu_idx`): each level gets a bit field wide
//! enough for its count rounded up to a power of two, threads in the low bits, then cores, dies
//! and packages. The MADT, the MP table and CPUID leaves 1/0xB/0x1F must all use these IDs.

/// The guest's CPU topology (counts per parent level; all at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTopology {
    pub sockets: u32,
    pub dies: u32,
    pub cores: u32,
    pub threads: u32,
}

impl Default for CpuTopology {
    fn default() -> Self {
        Self {
            sockets: 1,
            dies: 1,
            cores: 1,
            threads: 1,
        }
    }
}

/// Bits needed to number `count` items (QEMU `apicid_bitwidth_for_count`).
fn bit_width(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// The thread, core, die and package numbers of one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopoIds {
    pub pkg: u32,
    pub die: u32,
    pub core: u32,
    pub smt: u32,
}

impl CpuTopology {
    /// Width of the SMT (thread) field; CPUID 0xB sub-leaf 0 EAX shift.
    pub fn smt_width(&self) -> u32 {
        bit_width(self.threads)
    }

    /// Width of the core field.
    pub fn core_width(&self) -> u32 {
        bit_width(self.cores)
    }

    /// Width of the die field.
    pub fn die_width(&self) -> u32 {
        bit_width(self.dies)
    }

    /// Bit offset of the core field (CPUID 0xB sub-leaf 0 shift).
    pub fn core_offset(&self) -> u32 {
        self.smt_width()
    }

    /// Bit offset of the die field (CPUID 0xB sub-leaf 1 shift without dies).
    pub fn die_offset(&self) -> u32 {
        self.core_offset() + self.core_width()
    }

    /// Bit offset of the package field (CPUID 0x1F last shift).
    pub fn pkg_offset(&self) -> u32 {
        self.die_offset() + self.die_width()
    }

    /// Topology numbers of the CPU with index `cpu_index` (0-based, in `-smp` order).
    pub fn ids(&self, cpu_index: u32) -> TopoIds {
        let threads = self.threads.max(1);
        let cores = self.cores.max(1);
        let dies = self.dies.max(1);
        TopoIds {
            smt: cpu_index % threads,
            core: cpu_index / threads % cores,
            die: cpu_index / (threads * cores) % dies,
            pkg: cpu_index / (threads * cores * dies),
        }
    }

    /// The APIC ID of the CPU with index `cpu_index`.
    pub fn apic_id(&self, cpu_index: u32) -> u32 {
        let t = self.ids(cpu_index);
        (t.pkg << self.pkg_offset())
            | (t.die << self.die_offset())
            | (t.core << self.core_offset())
            | t.smt
    }

    /// APIC IDs of CPUs `0..count`.
    pub fn apic_ids(&self, count: u32) -> Vec<u32> {
        (0..count).map(|i| self.apic_id(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(sockets: u32, dies: u32, cores: u32, threads: u32) -> CpuTopology {
        CpuTopology {
            sockets,
            dies,
            cores,
            threads,
        }
    }

    #[test]
    fn widths_round_up_to_powers_of_two() {
        assert_eq!(bit_width(1), 0);
        assert_eq!(bit_width(2), 1);
        assert_eq!(bit_width(3), 2);
        assert_eq!(bit_width(4), 2);
        assert_eq!(bit_width(5), 3);
        assert_eq!(bit_width(255), 8);
        assert_eq!(bit_width(256), 8);
    }

    #[test]
    fn flat_topologies_are_the_identity() {
        assert_eq!(topo(1, 1, 4, 1).apic_ids(4), vec![0, 1, 2, 3]);
        assert_eq!(topo(4, 1, 1, 1).apic_ids(4), vec![0, 1, 2, 3]);
    }

    #[test]
    fn gaps_like_qemu() {
        // -smp 6,sockets=2,cores=3,threads=1: cores use 2 bits.
        assert_eq!(topo(2, 1, 3, 1).apic_ids(6), vec![0, 1, 2, 4, 5, 6]);
        // -smp 12,sockets=2,cores=3,threads=2: thread bit, 2 core bits, package at bit 3.
        assert_eq!(
            topo(2, 1, 3, 2).apic_ids(12),
            vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]
        );
        // Dies: -smp 8,sockets=2,dies=2,cores=1,threads=2 -> die bit 1, package bit 2.
        assert_eq!(topo(2, 2, 1, 2).apic_ids(8), vec![0, 1, 2, 3, 4, 5, 6, 7]);
        let t = topo(2, 3, 3, 3);
        assert_eq!((t.core_offset(), t.die_offset(), t.pkg_offset()), (2, 4, 6));
        assert_eq!(t.apic_id(27), 1 << 6);
        assert_eq!(
            t.ids(14),
            TopoIds {
                pkg: 0,
                die: 1,
                core: 1,
                smt: 2
            }
        );
        assert_eq!(t.apic_id(14), (1 << 4) | (1 << 2) | 2);
    }
}
