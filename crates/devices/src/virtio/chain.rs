//! A validated descriptor chain (§2.7.5): every buffer lies inside guest memory, device-readable
//! buffers come before device-writable ones, and the chain ends properly (no loop, no index past
//! the table, no bad indirect table, at most queue-size descriptors).
//!
//! virtio-queue's iterator stops silently on those faults; here they become [`ChainError`]s, so
//! a device completes the request with an error instead of acting on a cut-off chain.

use std::ops::Deref;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor chain {head} is empty or its head is invalid")]
    Empty { head: u16 },
    #[error("descriptor chain {head} does not end: it loops, is longer than the queue, points past the table or has a bad indirect table")]
    Unterminated { head: u16 },
    #[error("descriptor chain {head}: buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { head: u16, addr: u64, len: u32 },
    #[error("descriptor chain {head}: a device-readable buffer follows a device-writable one")]
    ReadableAfterWritable { head: u16 },
    #[error("descriptor chain {head}: {what}")]
    Malformed { head: u16, what: &'static str },
    #[error("descriptor chain {head}: guest memory access at {addr:#x} failed")]
    Memory { head: u16, addr: u64 },
}

/// One buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: GuestAddress,
    pub len: u32,
    pub writable: bool,
}

/// A chain's buffers, checked; readable ones first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescChain {
    pub head: u16,
    descs: Vec<Desc>,
    /// Index of the first writable buffer (== descs.len() if none).
    first_writable: usize,
}

impl DescChain {
    /// Walk and check `chain`, whose buffers live in `mem`. On error the caller completes the
    /// request with the head index it took before.
    pub fn parse<M>(chain: DescriptorChain<M>, mem: &GuestMemoryMmap) -> Result<Self, ChainError>
    where
        M: Deref<Target = GuestMemoryMmap>,
    {
        let head = chain.head_index();
        let mut descs = Vec::new();
        let mut last_has_next = false;
        for d in chain {
            last_has_next = d.has_next();
            descs.push(Desc {
                addr: d.addr(),
                len: d.len(),
                writable: d.is_write_only(),
            });
        }
        if descs.is_empty() {
            return Err(ChainError::Empty { head });
        }
        // The iterator ended on a descriptor that still announces a successor: it stopped on a
        // fault (loop / too long, next index out of the table, unreadable or bad indirect table).
        if last_has_next {
            return Err(ChainError::Unterminated { head });
        }
        let mut first_writable = descs.len();
        for (i, d) in descs.iter().enumerate() {
            if !mem.check_range(d.addr, d.len as usize) {
                return Err(ChainError::OutsideMemory {
                    head,
                    addr: d.addr.raw_value(),
                    len: d.len,
                });
            }
            if d.writable {
                first_writable = first_writable.min(i);
            } else if i > first_writable {
                return Err(ChainError::ReadableAfterWritable { head });
            }
        }
        Ok(Self {
            head,
            descs,
            first_writable,
        })
    }

    pub fn readable(&self) -> &[Desc] {
        &self.descs[..self.first_writable]
    }

    pub fn writable(&self) -> &[Desc] {
        &self.descs[self.first_writable..]
    }

    pub fn readable_len(&self) -> u64 {
        self.readable().iter().map(|d| u64::from(d.len)).sum()
    }

    pub fn writable_len(&self) -> u64 {
        self.writable().iter().map(|d| u64::from(d.len)).sum()
    }

    fn malformed(&self, what: &'static str) -> ChainError {
        ChainError::Malformed {
            head: self.head,
            what,
        }
    }

    /// Visit the `(guest address, length)` pieces of `[offset, offset + len)` inside `descs`.
    fn pieces(
        &self,
        descs: &[Desc],
        mut offset: u64,
        len: u64,
        mut f: impl FnMut(GuestAddress, usize, usize) -> Result<(), ChainError>,
    ) -> Result<(), ChainError> {
        let total: u64 = descs.iter().map(|d| u64::from(d.len)).sum();
        if offset.checked_add(len).is_none_or(|end| end > total) {
            return Err(self.malformed("access past the end of the buffers"));
        }
        let mut done = 0usize;
        let len = len as usize;
        for d in descs {
            if done == len {
                break;
            }
            let dlen = u64::from(d.len);
            if offset >= dlen {
                offset -= dlen;
                continue;
            }
            let n = ((dlen - offset) as usize).min(len - done);
            // In range: parse() checked addr..addr+len lies in guest memory.
            f(d.addr.unchecked_add(offset), done, n)?;
            done += n;
            offset = 0;
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at `offset` of the device-readable buffers.
    pub fn read_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ChainError> {
        let head = self.head;
        self.pieces(self.readable(), offset, buf.len() as u64, |addr, at, n| {
            mem.read_slice(&mut buf[at..at + n], addr)
                .map_err(|_| ChainError::Memory {
                    head,
                    addr: addr.raw_value(),
                })
        })
    }

    /// Write `buf` at `offset` of the device-writable buffers.
    pub fn write_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: u64,
        buf: &[u8],
    ) -> Result<(), ChainError> {
        let head = self.head;
        self.pieces(self.writable(), offset, buf.len() as u64, |addr, at, n| {
            mem.write_slice(&buf[at..at + n], addr)
                .map_err(|_| ChainError::Memory {
                    head,
                    addr: addr.raw_value(),
                })
        })
    }
}
