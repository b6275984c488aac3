//! The guest CPU: QEMU's CPUID feature names ([`features`]), the `-cpu` configuration
//! ([`config`]) and how it turns KVM's supported CPUID into the guest's ([`guest`]).
//! See docs/CPU.md.

pub mod config;
pub mod features;
pub mod guest;
pub mod hyperv;
pub mod models;
#[cfg(test)]
mod tests;

pub use config::{CpuConfig, CpuConfigError, CpuModel, FeatureSetting};
pub use features::{Feature, FeatureWord, Reg, FEATURE_WORDS};
pub use guest::{
    feature_control, feature_values, guest_cpuid, CpuidError, GuestCpuid, UnavailableFeature,
};
pub use hyperv::{HypervConfig, HypervError, HypervFeature, HypervSupport};
pub use models::ModelDef;
