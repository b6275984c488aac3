//! virtio-blk (virtio 1.2 §5.2) on a [`Disk`]: read, write, flush, get-id, discard and
//! write-zeroes. Every request is checked (sector range, data length, buffer directions) and a bad
//! one is completed with VIRTIO_BLK_S_IOERR, never acted on in part.

use super::block_pool::{self, IoPool, IO_THREADS};
use super::worker::Worker;
use super::{
    ActivateContext, ChainError, DescChain, DeviceCounters, VirtioDevice, VirtioError,
    COMMON_FEATURES, TYPE_BLOCK,
};
use rvmm_block::Disk;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use vm_memory::GuestMemoryMmap;

const QUEUE_SIZE: u16 = 256;
pub const SECTOR_SIZE: u64 = 512;

// Feature bits (§5.2.3).
const F_SEG_MAX: u32 = 2;
const F_RO: u32 = 5;
const F_BLK_SIZE: u32 = 6;
const F_FLUSH: u32 = 9;
const F_DISCARD: u32 = 13;
const F_WRITE_ZEROES: u32 = 14;

// Request types and status values (§5.2.6).
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// Request header: type, reserved, sector.
const HEADER_LEN: u64 = 16;
/// One discard / write-zeroes segment: sector, num_sectors, flags.
const SEGMENT_LEN: u64 = 16;
/// GET_ID answers with up to 20 bytes (§5.2.6).
pub const ID_LEN: usize = 20;
/// Data moves through a bounce buffer this big, so a huge request costs no more memory.
const CHUNK: usize = 1 << 20;
/// Largest discard / write-zeroes range per segment we advertise (sectors).
const MAX_DISCARD_SECTORS: u32 = u32::MAX / 512;

thread_local! {
    /// The thread's bounce buffer (worker and I/O threads), kept between requests (a fresh 128 KiB allocation per
    /// request is an mmap, page faults and a munmap).
    static BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The block device.
pub struct BlockDevice {
    /// Reads, writes and flushes share it (several run at once on the I/O threads); discard and
    /// write-zeroes, which may unmap clusters under them, take it alone.
    disk: Arc<RwLock<Disk>>,
    id: [u8; ID_LEN],
    features: u64,
    config: [u8; 60],
    /// Stopped before `pool`, which then finishes the requests the worker handed it.
    worker: Option<Worker>,
    pool: Option<IoPool>,
    counters: Arc<DeviceCounters>,
}

fn shared(disk: &RwLock<Disk>) -> RwLockReadGuard<'_, Disk> {
    disk.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive(disk: &RwLock<Disk>) -> RwLockWriteGuard<'_, Disk> {
    disk.write().unwrap_or_else(|e| e.into_inner())
}

/// Whether a request is a FLUSH, which waits for every request taken before it (block_pool.rs).
/// A header the guest left unreadable is no barrier: the request fails on its own.
fn is_flush(mem: &GuestMemoryMmap, chain: &DescChain) -> bool {
    let mut kind = [0u8; 4];
    chain.read_at(mem, 0, &mut kind).is_ok() && u32::from_le_bytes(kind) == T_FLUSH
}

impl BlockDevice {
    /// `serial` is what GET_ID returns (truncated to 20 bytes; QEMU's `serial=`).
    pub fn new(disk: Disk, serial: Option<&str>) -> Self {
        let readonly = disk.readonly();
        let sectors = disk.size() / SECTOR_SIZE;
        let mut features = COMMON_FEATURES | (1 << F_SEG_MAX) | (1 << F_BLK_SIZE) | (1 << F_FLUSH);
        if readonly {
            features |= 1 << F_RO;
        } else {
            features |= (1 << F_DISCARD) | (1 << F_WRITE_ZEROES);
        }
        // struct virtio_blk_config (§5.2.4), little-endian.
        let mut config = [0u8; 60];
        config[0..8].copy_from_slice(&sectors.to_le_bytes());
        // seg_max: the header and status need two descriptors of the queue.
        config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        config[34..36].copy_from_slice(&1u16.to_le_bytes());
        config[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        config[40..44].copy_from_slice(&1u32.to_le_bytes());
        config[44..48].copy_from_slice(&1u32.to_le_bytes());
        config[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        config[52..56].copy_from_slice(&1u32.to_le_bytes());
        config[56] = 1;
        let mut id = [0u8; ID_LEN];
        if let Some(s) = serial {
            let n = s.len().min(ID_LEN);
            id[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        Self {
            disk: Arc::new(RwLock::new(disk)),
            id,
            features,
            config,
            worker: None,
            pool: None,
            counters: Arc::default(),
        }
    }

    /// The disk, shared with the worker (for flushing at shutdown).
    pub fn disk(&self) -> &Arc<RwLock<Disk>> {
        &self.disk
    }
}

/// Serve one request and count it; returns the used length (bytes written to the driver's
/// buffers). Public for the fuzz targets (fuzz/).
#[doc(hidden)]
pub fn handle_request(
    mem: &GuestMemoryMmap,
    disk: &RwLock<Disk>,
    id: &[u8; ID_LEN],
    counters: &DeviceCounters,
    chain: Result<DescChain, ChainError>,
) -> u32 {
    let chain = match chain {
        Ok(c) => c,
        Err(e) => {
            // The buffers cannot be trusted, so there is nowhere safe to put a status byte.
            tracing::debug!("virtio-blk: {e}");
            counters.failed();
            return 0;
        }
    };
    let wlen = chain.writable_len();
    if wlen == 0 {
        tracing::debug!("virtio-blk: request {} has no status byte", chain.head);
        counters.failed();
        return 0;
    }
    let status_at = wlen - 1;
    let (status, data_written) = match execute(mem, disk, id, &chain, status_at) {
        Ok((to_guest, from_guest)) => {
            counters.completed(to_guest, from_guest);
            (S_OK, to_guest)
        }
        Err(s) => {
            counters.failed();
            (s, 0)
        }
    };
    if chain.write_at(mem, status_at, &[status]).is_err() {
        return 0;
    }
    // Used length: data placed in the driver's buffers plus the status byte (§5.2.6.1).
    (data_written + 1).min(u64::from(u32::MAX)) as u32
}

/// Run the request; `Ok((data bytes written to the guest, data bytes read from it))` or
/// `Err(status)`.
fn execute(
    mem: &GuestMemoryMmap,
    disk: &RwLock<Disk>,
    id: &[u8; ID_LEN],
    chain: &DescChain,
    data_in_len: u64,
) -> Result<(u64, u64), u8> {
    let mut header = [0u8; HEADER_LEN as usize];
    chain.read_at(mem, 0, &mut header).map_err(|e| {
        tracing::debug!("virtio-blk: short header: {e}");
        S_IOERR
    })?;
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
    let data_out_len = chain.readable_len() - HEADER_LEN;
    let ioerr = |e: &dyn std::fmt::Display| {
        tracing::debug!("virtio-blk: {e}");
        S_IOERR
    };
    match kind {
        T_IN | T_OUT => {
            let (len, wrong_way) = if kind == T_IN {
                (data_in_len, data_out_len)
            } else {
                (data_out_len, data_in_len)
            };
            // Data buffers in the wrong direction (§5.2.6.2: IN data is device-writable).
            if wrong_way != 0 {
                return Err(ioerr(&format_args!(
                    "request type {kind} has {wrong_way} data bytes in the wrong direction"
                )));
            }
            if len % SECTOR_SIZE != 0 {
                return Err(ioerr(&format_args!(
                    "data length {len} is not a multiple of 512"
                )));
            }
            let offset = sector
                .checked_mul(SECTOR_SIZE)
                .ok_or_else(|| ioerr(&format_args!("sector {sector} overflows")))?;
            let d = shared(disk);
            if offset.checked_add(len).is_none_or(|end| end > d.size()) {
                return Err(ioerr(&format_args!(
                    "sector {sector} + {len} bytes is past the end of the disk"
                )));
            }
            BOUNCE.with_borrow_mut(|buf| {
                let want = CHUNK.min(len as usize);
                if buf.len() < want {
                    buf.resize(want, 0);
                }
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(CHUNK as u64) as usize;
                    // Every byte of `b` is overwritten before it is used.
                    let b = &mut buf[..n];
                    if kind == T_IN {
                        d.read(b, offset + done).map_err(|e| ioerr(&e))?;
                        chain.write_at(mem, done, b).map_err(|e| ioerr(&e))?;
                    } else {
                        chain
                            .read_at(mem, HEADER_LEN + done, b)
                            .map_err(|e| ioerr(&e))?;
                        d.write(b, offset + done).map_err(|e| ioerr(&e))?;
                    }
                    done += n as u64;
                }
                Ok(if kind == T_IN { (len, 0) } else { (0, len) })
            })
        }
        T_FLUSH => {
            shared(disk).flush().map_err(|e| ioerr(&e))?;
            Ok((0, 0))
        }
        T_GET_ID => {
            let n = (data_in_len as usize).min(ID_LEN);
            chain.write_at(mem, 0, &id[..n]).map_err(|e| ioerr(&e))?;
            Ok((n as u64, 0))
        }
        T_DISCARD | T_WRITE_ZEROES => {
            // max_discard_seg = max_write_zeroes_seg = 1: exactly one segment (§5.2.6.2).
            if data_out_len != SEGMENT_LEN {
                return Err(ioerr(&format_args!(
                    "{data_out_len} bytes of segments (one 16-byte segment expected)"
                )));
            }
            let mut seg = [0u8; SEGMENT_LEN as usize];
            chain
                .read_at(mem, HEADER_LEN, &mut seg)
                .map_err(|e| ioerr(&e))?;
            let start = u64::from_le_bytes(seg[0..8].try_into().unwrap_or([0; 8]));
            let count = u32::from_le_bytes(seg[8..12].try_into().unwrap_or([0; 4]));
            let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or([0; 4]));
            let unmap = flags & 1 != 0;
            // Unknown flags, or unmap on a discard, are errors (§5.2.6.2 device requirements).
            if flags & !1 != 0 || (kind == T_DISCARD && unmap) {
                return Err(S_UNSUPP);
            }
            if count > MAX_DISCARD_SECTORS {
                return Err(ioerr(&format_args!("{count} sectors exceed the maximum")));
            }
            let offset = start
                .checked_mul(SECTOR_SIZE)
                .ok_or_else(|| ioerr(&format_args!("sector {start} overflows")))?;
            let len = u64::from(count) * SECTOR_SIZE;
            let mut d = exclusive(disk);
            if kind == T_DISCARD {
                d.discard(offset, len).map_err(|e| ioerr(&e))?;
            } else {
                d.write_zeroes(offset, len, unmap).map_err(|e| ioerr(&e))?;
            }
            Ok((0, 0))
        }
        other => {
            tracing::debug!("virtio-blk: unsupported request type {other}");
            Err(S_UNSUPP)
        }
    }
}

impl VirtioDevice for BlockDevice {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn name(&self) -> &'static str {
        "virtio-blk"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn config_size(&self) -> usize {
        self.config.len()
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError> {
        let ActivateContext {
            mem,
            mut queues,
            interrupt,
            pause,
            ..
        } = ctx;
        if queues.len() != 1 {
            return Err(VirtioError::QueueCount {
                device: "virtio-blk",
                expected: 1,
                got: queues.len(),
            });
        }
        let q = queues.remove(0);
        let (disk, id, counters) = (self.disk.clone(), self.id, self.counters.clone());
        let serve =
            Box::new(move |mem: &GuestMemoryMmap, c| handle_request(mem, &disk, &id, &counters, c));
        let io = |what, source| VirtioError::Io {
            device: "virtio-blk",
            what,
            source,
        };
        let pool = IoPool::start(
            "virtio-blk",
            mem,
            q.queue,
            interrupt,
            pause.clone(),
            serve,
            is_flush,
            IO_THREADS,
        )
        .map_err(|e| io("spawn I/O threads", e))?;
        let worker =
            block_pool::spawn_worker(&pool, q.notify, &pause).map_err(|e| io("spawn worker", e))?;
        self.worker = Some(worker);
        self.pool = Some(pool);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
        if let Some(p) = self.pool.take() {
            p.stop();
        }
    }

    fn counters(&self) -> Arc<DeviceCounters> {
        self.counters.clone()
    }

    fn flush(&self) {
        let disk = shared(&self.disk);
        if let Err(e) = disk.flush() {
            tracing::error!(
                "virtio-blk: flush of disk image '{}' at shutdown failed: {e}",
                disk.path().display()
            );
        }
    }
}
