//! rvmm-arch
