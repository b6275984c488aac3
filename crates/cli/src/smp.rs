//! `-smp` topology: fills in omitted values and validates the result with QEMU's rules
//! (`hw/core/machine-smp.c`, `machine_parse_smp_config`, cores preferred since 6.2).

use thiserror::Error;

use crate::config::{MachineKind, SmpConfig};
use crate::opts::{OptsError, QemuOpts};

/// Why a `-smp` topology was rejected (messages follow QEMU's wording).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SmpError {
    #[error(transparent)]
    Opts(#[from] OptsError),
    #[error("Invalid CPU topology: CPU topology parameters must be greater than zero")]
    Zero,
    #[error("{0} > 1 not supported by this machine's CPU topology")]
    LevelNotSupported(&'static str),
    #[error(
        "Invalid CPU topology: product of the hierarchy must match maxcpus: \
         {hierarchy} != maxcpus ({maxcpus})"
    )]
    ProductMismatch { hierarchy: String, maxcpus: u64 },
    #[error(
        "Invalid CPU topology: maxcpus must be equal to or greater than smp: \
         {hierarchy} == maxcpus ({maxcpus}) < smp_cpus ({cpus})"
    )]
    MaxBelowCpus {
        hierarchy: String,
        maxcpus: u64,
        cpus: u64,
    },
    #[error("Invalid SMP CPUs {maxcpus}. The max CPUs supported by machine '{machine}' is {max}")]
    TooMany {
        maxcpus: u64,
        machine: &'static str,
        max: u32,
    },
}

/// The `-smp` keys as given on the command line; repeated `-smp` options merge, later wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmpArgs {
    pub cpus: Option<u32>,
    pub sockets: Option<u32>,
    pub dies: Option<u32>,
    pub clusters: Option<u32>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
    pub maxcpus: Option<u32>,
}

/// Keys QEMU 7.2 accepts for `-smp`.
const SMP_KEYS: [&str; 7] = [
    "cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus",
];

impl SmpArgs {
    /// Merges one `-smp` argument (implied key `cpus`) into these arguments.
    pub fn merge(&mut self, opts: &QemuOpts) -> Result<(), OptsError> {
        opts.check_known(&SMP_KEYS)?;
        let fields: [(&str, &mut Option<u32>); 7] = [
            ("cpus", &mut self.cpus),
            ("sockets", &mut self.sockets),
            ("dies", &mut self.dies),
            ("clusters", &mut self.clusters),
            ("cores", &mut self.cores),
            ("threads", &mut self.threads),
            ("maxcpus", &mut self.maxcpus),
        ];
        for (key, field) in fields {
            if let Some(v) = opts.get_u32(key)? {
                *field = Some(v);
            }
        }
        Ok(())
    }

    /// Computes the full topology for `machine`, or explains why it is invalid.
    pub fn resolve(&self, machine: MachineKind) -> Result<SmpConfig, SmpError> {
        let all = [
            self.cpus,
            self.sockets,
            self.dies,
            self.clusters,
            self.cores,
            self.threads,
            self.maxcpus,
        ];
        if all.contains(&Some(0)) {
            return Err(SmpError::Zero);
        }
        // x86 has no clusters; only the PC machines model dies.
        if self.clusters.is_some_and(|c| c > 1) {
            return Err(SmpError::LevelNotSupported("clusters"));
        }
        let dies_supported = machine != MachineKind::Microvm;
        if !dies_supported && self.dies.is_some_and(|d| d > 1) {
            return Err(SmpError::LevelNotSupported("dies"));
        }

        // u64 keeps every product of u32 levels from overflowing until the final check.
        let get = |v: Option<u32>| u64::from(v.unwrap_or(0));
        let mut cpus = get(self.cpus);
        let mut sockets = get(self.sockets);
        let dies = get(self.dies).max(1);
        let mut cores = get(self.cores);
        let mut threads = get(self.threads);
        let mut maxcpus = get(self.maxcpus);

        if cpus == 0 && maxcpus == 0 {
            sockets = sockets.max(1);
            cores = cores.max(1);
            threads = threads.max(1);
        } else {
            if maxcpus == 0 {
                maxcpus = cpus;
            }
            // Since QEMU 6.2 omitted cores are computed before omitted sockets.
            if cores == 0 {
                sockets = sockets.max(1);
                threads = threads.max(1);
                cores = maxcpus / product(&[sockets, dies, threads]);
            } else if sockets == 0 {
                threads = threads.max(1);
                sockets = maxcpus / product(&[dies, cores, threads]);
            }
            if threads == 0 {
                threads = maxcpus / product(&[sockets, dies, cores]);
            }
        }

        let total = product(&[sockets, dies, cores, threads]);
        if maxcpus == 0 {
            maxcpus = total;
        }
        if cpus == 0 {
            cpus = maxcpus;
        }

        let hierarchy = if dies_supported {
            format!("sockets ({sockets}) * dies ({dies}) * cores ({cores}) * threads ({threads})")
        } else {
            format!("sockets ({sockets}) * cores ({cores}) * threads ({threads})")
        };
        if total != maxcpus {
            return Err(SmpError::ProductMismatch { hierarchy, maxcpus });
        }
        if maxcpus < cpus {
            return Err(SmpError::MaxBelowCpus {
                hierarchy,
                maxcpus,
                cpus,
            });
        }
        let max = machine.max_cpus();
        if maxcpus > u64::from(max) {
            return Err(SmpError::TooMany {
                maxcpus,
                machine: machine.name(),
                max,
            });
        }

        // Every level is at most maxcpus, which was just bounded by the machine limit.
        let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(SmpConfig {
            cpus: narrow(cpus),
            sockets: narrow(sockets),
            dies: narrow(dies),
            cores: narrow(cores),
            threads: narrow(threads),
            maxcpus: narrow(maxcpus),
        })
    }
}

/// Saturating product of topology levels (each at least 1 where used as a divisor).
fn product(levels: &[u64]) -> u64 {
    levels.iter().fold(1u64, |acc, &l| acc.saturating_mul(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smp(arg: &str, machine: MachineKind) -> Result<SmpConfig, SmpError> {
        let mut args = SmpArgs::default();
        args.merge(&QemuOpts::parse(arg, Some("cpus")).unwrap())?;
        args.resolve(machine)
    }

    fn topo(arg: &str) -> (u32, u32, u32, u32, u32, u32) {
        let c = smp(arg, MachineKind::Pc).unwrap();
        (c.cpus, c.sockets, c.dies, c.cores, c.threads, c.maxcpus)
    }

    #[test]
    fn defaults_to_one_cpu() {
        let c = SmpArgs::default().resolve(MachineKind::Pc).unwrap();
        assert_eq!(c, SmpConfig::default());
        assert_eq!(
            (c.cpus, c.sockets, c.dies, c.cores, c.threads, c.maxcpus),
            (1, 1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn cpus_only_prefers_cores() {
        // (cpus, sockets, dies, cores, threads, maxcpus)
        assert_eq!(topo("4"), (4, 1, 1, 4, 1, 4));
        assert_eq!(topo("cpus=8"), (8, 1, 1, 8, 1, 8));
    }

    #[test]
    fn fills_in_missing_levels() {
        assert_eq!(topo("8,sockets=2"), (8, 2, 1, 4, 1, 8));
        assert_eq!(topo("8,cores=2"), (8, 4, 1, 2, 1, 8));
        assert_eq!(topo("8,threads=2"), (8, 1, 1, 4, 2, 8));
        assert_eq!(topo("8,sockets=2,cores=2"), (8, 2, 1, 2, 2, 8));
        assert_eq!(topo("16,sockets=2,dies=2,threads=2"), (16, 2, 2, 2, 2, 16));
        assert_eq!(topo("sockets=2,cores=3,threads=2"), (12, 2, 1, 3, 2, 12));
        assert_eq!(topo("sockets=2"), (2, 2, 1, 1, 1, 2));
        assert_eq!(topo("cores=4"), (4, 1, 1, 4, 1, 4));
        assert_eq!(topo("dies=2"), (2, 1, 2, 1, 1, 2));
    }

    #[test]
    fn maxcpus_for_hotplug() {
        assert_eq!(topo("2,maxcpus=8"), (2, 1, 1, 8, 1, 8));
        assert_eq!(topo("maxcpus=8"), (8, 1, 1, 8, 1, 8));
        assert_eq!(topo("2,sockets=2,maxcpus=8"), (2, 2, 1, 4, 1, 8));
        assert_eq!(topo("clusters=1,cpus=2"), (2, 1, 1, 2, 1, 2));
    }

    #[test]
    fn repeated_smp_merges() {
        let mut args = SmpArgs::default();
        args.merge(&QemuOpts::parse("4", Some("cpus")).unwrap())
            .unwrap();
        args.merge(&QemuOpts::parse("sockets=2", Some("cpus")).unwrap())
            .unwrap();
        let c = args.resolve(MachineKind::Pc).unwrap();
        assert_eq!((c.cpus, c.sockets, c.cores), (4, 2, 2));
    }

    #[test]
    fn product_must_match_maxcpus() {
        let err = smp("5,sockets=2", MachineKind::Pc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid CPU topology: product of the hierarchy must match maxcpus: \
             sockets (2) * dies (1) * cores (2) * threads (1) != maxcpus (5)"
        );
        let err = smp("4,sockets=2,cores=2,threads=2", MachineKind::Q35).unwrap_err();
        assert!(
            matches!(err, SmpError::ProductMismatch { maxcpus: 4, .. }),
            "{err}"
        );
        // Computed cores of zero (cpus smaller than sockets) cannot match either.
        let err = smp("2,sockets=4", MachineKind::Pc).unwrap_err();
        assert!(matches!(err, SmpError::ProductMismatch { .. }), "{err}");
    }

    #[test]
    fn microvm_hierarchy_has_no_dies() {
        let err = smp("5,sockets=2", MachineKind::Microvm).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid CPU topology: product of the hierarchy must match maxcpus: \
             sockets (2) * cores (2) * threads (1) != maxcpus (5)"
        );
        assert_eq!(
            smp("4,dies=2", MachineKind::Microvm)
                .unwrap_err()
                .to_string(),
            "dies > 1 not supported by this machine's CPU topology"
        );
        assert!(smp("4,dies=1", MachineKind::Microvm).is_ok());
    }

    #[test]
    fn maxcpus_below_cpus() {
        let err = smp("8,maxcpus=4", MachineKind::Pc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: \
             sockets (1) * dies (1) * cores (4) * threads (1) == maxcpus (4) < smp_cpus (8)"
        );
    }

    #[test]
    fn zero_is_rejected() {
        for arg in [
            "0",
            "cpus=0",
            "4,sockets=0",
            "4,cores=0",
            "4,threads=0",
            "4,maxcpus=0",
            "4,dies=0",
        ] {
            assert_eq!(smp(arg, MachineKind::Pc), Err(SmpError::Zero), "{arg}");
        }
    }

    #[test]
    fn clusters_above_one_rejected() {
        assert_eq!(
            smp("4,clusters=2", MachineKind::Pc)
                .unwrap_err()
                .to_string(),
            "clusters > 1 not supported by this machine's CPU topology"
        );
    }

    #[test]
    fn machine_cpu_limits() {
        assert!(smp("255", MachineKind::Pc).is_ok());
        assert_eq!(
            smp("256", MachineKind::Pc).unwrap_err().to_string(),
            "Invalid SMP CPUs 256. The max CPUs supported by machine 'pc' is 255"
        );
        assert!(smp("288", MachineKind::Q35).is_ok());
        assert!(smp("289", MachineKind::Microvm).is_err());
        assert!(smp("1,maxcpus=256", MachineKind::Pc).is_err());
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let err = smp(
            "sockets=4294967295,cores=4294967295,threads=4294967295,dies=4294967295",
            MachineKind::Pc,
        )
        .unwrap_err();
        assert!(matches!(err, SmpError::TooMany { .. }), "{err}");
        let err = smp(
            "4,sockets=4294967295,dies=4294967295,threads=4294967295",
            MachineKind::Pc,
        )
        .unwrap_err();
        assert!(matches!(err, SmpError::ProductMismatch { .. }), "{err}");
        let err = smp("4294967295", MachineKind::Pc).unwrap_err();
        assert!(matches!(err, SmpError::TooMany { .. }), "{err}");
    }

    #[test]
    fn bad_keys_and_values() {
        assert_eq!(
            smp("4,foo=1", MachineKind::Pc).unwrap_err().to_string(),
            "unknown parameter 'foo'"
        );
        assert_eq!(
            smp("four", MachineKind::Pc).unwrap_err().to_string(),
            "parameter 'cpus' expects a number, got 'four'"
        );
        assert!(smp("4294967296", MachineKind::Pc).is_err());
        assert!(smp("", MachineKind::Pc).is_err());
    }
}
