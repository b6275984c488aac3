//! A virtio-pci function in a snapshot: the transport core (status, features, queue settings,
//! InterruptStatus; `transport.rs`), the MSI-X vector each queue and the config space use, and
//! the MSI-X table with its pending bits. Config space (BARs, the MSI-X Enable and Function
//! Mask, the PCI cfg capability's window) is saved with the PCI bus and replayed before this.
//!
//! Restore holds the device's workers while the pieces go back: the transport activates the
//! device and rings every queue's notification, and a completion must not reach the vectors
//! before their assignment and table are restored (it would be lost).

use super::VirtioPciTransport;
use crate::pci::MsixState;
use crate::virtio::TransportState;
use crate::{Persist, StateError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VirtioPciState {
    pub transport: TransportState,
    /// `config_msix_vector`.
    pub config_vector: u16,
    /// Each queue's `queue_msix_vector`.
    pub queue_vectors: Vec<u16>,
    pub msix: MsixState,
}

impl Persist for VirtioPciTransport {
    type State = VirtioPciState;

    fn save(&self) -> VirtioPciState {
        let transport = self.core().save(&self.res);
        let (config_vector, queue_vectors) = self
            .vectors()
            .map(|v| v.saved())
            .unwrap_or((crate::virtio::VIRTIO_MSI_NO_VECTOR, Vec::new()));
        VirtioPciState {
            transport,
            config_vector,
            queue_vectors,
            msix: self.msix.save(),
        }
    }

    fn restore(&self, s: VirtioPciState) -> Result<(), StateError> {
        let invalid = |e: String| StateError::Invalid(format!("{}-pci: {e}", self.name));
        let held = self.res.pause.is_paused();
        self.res.pause.pause();
        let restored = (|| {
            self.core().restore(&self.res, s.transport)?;
            // After the core, whose reset clears the assignments.
            if let Some(v) = self.vectors() {
                v.restore(s.config_vector, &s.queue_vectors)
                    .map_err(invalid)?;
            }
            self.msix.restore(&s.msix).map_err(invalid)
        })();
        if !held {
            self.res.pause.resume();
        }
        restored
    }
}
