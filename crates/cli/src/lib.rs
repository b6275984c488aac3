//! rvmm-cli
