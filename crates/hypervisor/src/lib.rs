//! rvmm-hypervisor
