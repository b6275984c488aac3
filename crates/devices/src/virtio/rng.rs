//! virtio-rng (virtio 1.2 §5.4): fills the driver's buffers from the host's getrandom(2).

use super::worker::Worker;
use super::DeviceCounters;
use super::{
    activate_request_queue, ActivateContext, ChainError, DescChain, VirtioDevice, VirtioError,
    COMMON_FEATURES, TYPE_RNG,
};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

const QUEUE_SIZE: u16 = 256;
/// Largest amount handed out per request, so one huge buffer cannot keep the worker busy.
const MAX_REQUEST: usize = 64 * 1024;

/// The entropy device; it has one request queue and no config space.
#[derive(Default)]
pub struct RngDevice {
    worker: Option<Worker>,
    counters: Arc<DeviceCounters>,
}

impl RngDevice {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Fill `buf` with random bytes from the kernel's CSPRNG.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Serve one request and count it; returns the number of bytes written for the used ring.
/// Public for the fuzz targets (fuzz/).
#[doc(hidden)]
pub fn handle_request(
    mem: &GuestMemoryMmap,
    counters: &DeviceCounters,
    chain: Result<DescChain, ChainError>,
) -> u32 {
    let served = serve(mem, chain);
    match served {
        Some(n) => counters.completed(u64::from(n), 0),
        None => counters.failed(),
    }
    served.unwrap_or(0)
}

/// Fill the request's buffers; `None` if it was malformed or failed.
fn serve(mem: &GuestMemoryMmap, chain: Result<DescChain, ChainError>) -> Option<u32> {
    let chain = match chain {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("virtio-rng: {e}");
            return None;
        }
    };
    // §5.4.6.1: the device writes; a request with device-readable buffers is malformed.
    if !chain.readable().is_empty() {
        tracing::debug!(
            "virtio-rng: request {} has device-readable buffers",
            chain.head
        );
        return None;
    }
    let len = (chain.writable_len() as usize).min(MAX_REQUEST);
    let mut buf = vec![0u8; len];
    if let Err(e) = getrandom(&mut buf) {
        tracing::error!("virtio-rng: getrandom failed: {e}");
        return None;
    }
    match chain.write_at(mem, 0, &buf) {
        Ok(()) => Some(len as u32),
        Err(e) => {
            tracing::debug!("virtio-rng: {e}");
            None
        }
    }
}

impl VirtioDevice for RngDevice {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn name(&self) -> &'static str {
        "virtio-rng"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError> {
        let counters = self.counters.clone();
        self.worker = Some(activate_request_queue("virtio-rng", ctx, move |mem, c| {
            handle_request(mem, &counters, c)
        })?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }

    fn counters(&self) -> Arc<DeviceCounters> {
        self.counters.clone()
    }
}
