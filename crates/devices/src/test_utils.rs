//! Test helpers shared by the device unit tests.

use std::sync::Mutex;

use crate::{VmControl, VmRequest};

/// A `VmControl` that records every request instead of acting on it.
#[derive(Default)]
pub(crate) struct RecordingVmControl {
    requests: Mutex<Vec<VmRequest>>,
}

impl RecordingVmControl {
    /// Everything requested so far, oldest first.
    pub(crate) fn requests(&self) -> Vec<VmRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl VmControl for RecordingVmControl {
    fn request(&self, req: VmRequest) {
        self.requests.lock().unwrap().push(req);
    }
}
