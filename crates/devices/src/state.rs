//! Device state for snapshots (docs/SNAPSHOT.md): a device that can be saved implements
//! [`Persist`] with a serde struct of its registers; the VMM's device manager registers it
//! under the device's bus name. A device on a bus with no registered state makes `migrate`
//! fail, naming it, instead of restoring a guest whose device forgot what it was doing.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors restoring a device from a snapshot (the saved state is untrusted input).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("malformed state: {0}")]
    Format(#[source] serde_json::Error),
    #[error("invalid state: {0}")]
    Invalid(String),
}

/// What a device implements to be saved and restored: one serde struct per device.
pub trait Persist {
    /// Everything the guest can observe, and nothing host-specific (no file descriptors).
    type State: Serialize + DeserializeOwned;
    /// The device's state now (the vCPUs are paused: no access is in flight).
    fn save(&self) -> Self::State;
    /// Become the device that saved `state`. Values come from a file: check them.
    fn restore(&self, state: Self::State) -> Result<(), StateError>;
}

/// The object-safe form the device manager keeps, one per registered device.
pub trait DeviceState: Send + Sync {
    fn save_value(&self) -> Result<serde_json::Value, StateError>;
    fn restore_value(&self, value: serde_json::Value) -> Result<(), StateError>;
}

impl<T: Persist + Send + Sync> DeviceState for T {
    fn save_value(&self) -> Result<serde_json::Value, StateError> {
        serde_json::to_value(self.save()).map_err(StateError::Format)
    }

    fn restore_value(&self, value: serde_json::Value) -> Result<(), StateError> {
        let state = serde_json::from_value(value).map_err(StateError::Format)?;
        self.restore(state)
    }
}
