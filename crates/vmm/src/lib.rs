//! rvmm-vmm
