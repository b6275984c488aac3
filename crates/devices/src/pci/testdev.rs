//! QEMU's `-device pci-testdev` (hw/misc/pci-testdev.c, QEMU 7.2), the PCI device kvm-unit-tests
//! uses to time and check MMIO and port I/O exits with and without ioeventfds.
//!
//! Identity: 1b36:0005 (Red Hat, "QEMU PCI Test Device"), revision 0, class word
//! `PCI_CLASS_OTHERS` = 0x00ff (base class 0x00, sub-class 0xff), subsystem 1af4:1100, no
//! interrupt pin. BAR0: 4 KiB 32-bit memory ("pci-testdev-mmio"). BAR1: 256 bytes of I/O
//! ("pci-testdev-portio"). With QEMU's `membar=` property, BAR2: a 64-bit prefetchable memory
//! BAR with nothing behind it ("pci-testdev-membar"; reads 0, writes are dropped). The
//! device-specific config bytes 0x40-0xff are guest-writable scratch, as in QEMU.
//!
//! Six tests, `i = type * 3 + n`, type 0 = mmio (BAR0), 1 = portio (BAR1), n = 0 no-eventfd,
//! 1 wildcard-eventfd, 2 datamatch-eventfd. Each has a header the guest reads from offset 0 of
//! either BAR once selected (little-endian, QEMU's `PCITestDevHdr`):
//!
//! | offset | size | field  | value                                                        |
//! |--------|------|--------|--------------------------------------------------------------|
//! | 0      | 1    | test   | i (0-5)                                                      |
//! | 1      | 1    | width  | 1: the access width the test counts                          |
//! | 4      | 4    | offset | where to write: 2048 + i in BAR0 (mmio), 128 + i in BAR1     |
//! | 8      | 1    | data   | 0xfa, or 0xce for wildcard-eventfd (any value counts)        |
//! | 12     | 4    | count  | writes the device saw at `offset` since the test was picked  |
//! | 16     | ..   | name   | NUL-terminated "mmio-no-eventfd", "portio-datamatch-eventfd" |
//!
//! - A write of byte n to offset 0 of BAR0 (BAR1) selects test n (3 + n) and zeroes its count;
//!   n >= 3 selects nothing. Before any selection every read returns 0.
//! - A byte write of `data` (any byte for wildcard) at `offset` adds 1 to `count`. Accesses are
//!   split into bytes as QEMU's memory core does (`max_access_size = 1`): a 4-byte write to
//!   `offset` is four byte writes of which only the first can count; a multi-byte write to 0
//!   selects with its low byte and the other bytes are ignored.
//! - Reads return header bytes of the selected test whichever BAR they come through; byte
//!   `bufsize - 1` (the name's NUL) and everything after read 0.
//! - With ioeventfds registered (the `-eventfd` tests on KVM), the kernel completes matching
//!   writes without an exit, so `count` stays 0; kvm-unit-tests accepts 0 or the number of
//!   writes it made.
//!
//! ioeventfds: QEMU adds the selected test's eventfd when the guest picks it and removes it on
//! the next pick or reset. rvmm registers all four for as long as their BAR is mapped
//! ([`PciTestdev::ioevents`]). The guest cannot tell: every test has its own offset, and a
//! write there while another test is selected does nothing in QEMU either (the device only
//! counts at the selected test's offset). Like QEMU (with KVM_CAP_IOEVENTFD_ANY_LENGTH), the
//! mmio wildcard eventfd matches any length (len 0); the portio one matches byte writes only.
//! As in QEMU, a read drains the selected test's eventfd and does not change `count`.

use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{
    BarChange, BarKind, BarSpec, PciConfig, PciConfigError, PciDevice, PciIdentity, PciRegion,
    PciSpace, PCI_SUBDEVICE_ID_QEMU, PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};
use crate::BusDevice;

/// `PCI_VENDOR_ID_REDHAT`.
pub const PCI_VENDOR_ID_REDHAT: u16 = 0x1b36;
/// `PCI_DEVICE_ID_REDHAT_TEST`.
pub const PCI_DEVICE_ID_REDHAT_TEST: u16 = 0x0005;
/// BAR0 size: `IOTEST_MEMSIZE * 2`.
pub const PCI_TESTDEV_MMIO_SIZE: u64 = 2 * IOTEST_MEMSIZE;
/// BAR1 size: `IOTEST_IOSIZE * 2`.
pub const PCI_TESTDEV_PORTIO_SIZE: u64 = 2 * IOTEST_IOSIZE;

const IOTEST_MEMSIZE: u64 = 2048;
const IOTEST_IOSIZE: u64 = 128;
const IOTEST_DATAMATCH: u8 = 0xfa;
const IOTEST_NOMATCH: u8 = 0xce;
/// `IOTEST_ACCESS_WIDTH`: every test counts byte writes.
const ACCESS_WIDTH: u8 = 1;
const TEST_NAMES: [&str; 3] = ["no-eventfd", "wildcard-eventfd", "datamatch-eventfd"];
const TYPE_NAMES: [&str; 2] = ["mmio", "portio"];
const TESTS_PER_TYPE: usize = TEST_NAMES.len();

/// `PCITestDevHdr` field offsets.
const HDR_TEST: usize = 0;
const HDR_WIDTH: usize = 1;
const HDR_OFFSET: usize = 4;
const HDR_DATA: usize = 8;
const HDR_COUNT: usize = 12;
const HDR_NAME: usize = 16;

/// Test types, numbered as QEMU's `type` argument of `pci_testdev_write`.
const MMIO: usize = 0;
const PORTIO: usize = 1;

/// An ioeventfd the device wants registered in one of its regions.
#[derive(Debug, Clone)]
pub struct IoEvent {
    /// From the region's base.
    pub offset: u64,
    /// 1, 2, 4 or 8 bytes; 0 for any length (KVM_CAP_IOEVENTFD_ANY_LENGTH, MMIO only here).
    pub len: u32,
    /// Only writes of this value, or any value.
    pub datamatch: Option<u64>,
    pub fd: Arc<EventFd>,
}

/// One test (QEMU's `IOTest`) with its header bytes.
struct IoTest {
    /// `PCITestDevHdr` followed by the name and its NUL (`bufsize` bytes).
    hdr: Vec<u8>,
    region: usize,
    offset: u64,
    match_data: bool,
    data: u8,
    /// The ioeventfd length QEMU registers.
    ioevent_len: u32,
    notifier: Option<Arc<EventFd>>,
}

impl IoTest {
    fn new(i: usize) -> Self {
        let region = i / TESTS_PER_TYPE;
        let kind = i % TESTS_PER_TYPE;
        let name = format!("{}-{}", TYPE_NAMES[region], TEST_NAMES[kind]);
        let base = if region == MMIO {
            IOTEST_MEMSIZE
        } else {
            IOTEST_IOSIZE
        };
        let offset = base + i as u64 * u64::from(ACCESS_WIDTH);
        let match_data = kind != 1;
        let data = if match_data {
            IOTEST_DATAMATCH
        } else {
            IOTEST_NOMATCH
        };
        let mut hdr = vec![0u8; HDR_NAME + name.len() + 1];
        hdr[HDR_TEST] = i as u8;
        hdr[HDR_WIDTH] = ACCESS_WIDTH;
        hdr[HDR_OFFSET..HDR_OFFSET + 4].copy_from_slice(&(offset as u32).to_le_bytes());
        hdr[HDR_DATA] = data;
        hdr[HDR_NAME..HDR_NAME + name.len()].copy_from_slice(name.as_bytes());
        let notifier = if kind == 0 {
            None
        } else {
            match EventFd::new(EFD_NONBLOCK) {
                Ok(fd) => Some(Arc::new(fd)),
                Err(e) => {
                    // Without the eventfd the writes reach the device and count, as on TCG.
                    tracing::warn!("pci-testdev: no eventfd for {name}: {e}");
                    None
                }
            }
        };
        Self {
            hdr,
            region,
            offset,
            match_data,
            data,
            ioevent_len: if region == MMIO && !match_data {
                0
            } else {
                u32::from(ACCESS_WIDTH)
            },
            notifier,
        }
    }

    /// QEMU's `event_notifier_test_and_clear`.
    fn drain(&self) {
        if let Some(fd) = &self.notifier {
            // EAGAIN when nothing is pending; the value is not used.
            let _ = fd.read();
        }
    }

    fn count(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.hdr[HDR_COUNT..HDR_COUNT + 4]);
        u32::from_le_bytes(b)
    }

    fn set_count(&mut self, count: u32) {
        self.hdr[HDR_COUNT..HDR_COUNT + 4].copy_from_slice(&count.to_le_bytes());
    }
}

/// The tests and which one is selected (QEMU's `current`, -1 = None).
struct TestdevState {
    tests: Vec<IoTest>,
    current: Option<usize>,
}

impl TestdevState {
    fn new() -> Self {
        Self {
            tests: (0..TYPE_NAMES.len() * TESTS_PER_TYPE)
                .map(IoTest::new)
                .collect(),
            current: None,
        }
    }

    /// `pci_testdev_write` for one byte written through region `region`.
    fn write(&mut self, region: usize, addr: u64, value: u8) {
        if addr == HDR_TEST as u64 {
            self.current = None;
            let n = usize::from(value);
            if n >= TESTS_PER_TYPE {
                return;
            }
            let t = region * TESTS_PER_TYPE + n;
            if let Some(test) = self.tests.get_mut(t) {
                test.set_count(0);
                test.drain();
                self.current = Some(t);
            }
            return;
        }
        let Some(test) = self.current.and_then(|t| self.tests.get_mut(t)) else {
            return;
        };
        // QEMU also checks the access size against the test's, which is always 1 here.
        if addr != test.offset || (test.match_data && value != test.data) {
            return;
        }
        let count = test.count().wrapping_add(1);
        test.set_count(count);
    }

    /// `pci_testdev_read` for one byte.
    fn read(&self, addr: u64) -> u8 {
        let Some(test) = self.current.and_then(|t| self.tests.get(t)) else {
            return 0;
        };
        // QEMU returns 0 when addr + size >= bufsize, so the NUL and beyond read 0.
        let Some(i) = usize::try_from(addr)
            .ok()
            .filter(|i| i.saturating_add(1) < test.hdr.len())
        else {
            return 0;
        };
        test.drain();
        test.hdr[i]
    }
}

fn lock(state: &Mutex<TestdevState>) -> MutexGuard<'_, TestdevState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// BAR0 or BAR1: byte-wide accesses to the shared test state.
struct TestdevRegion {
    region: usize,
    state: Arc<Mutex<TestdevState>>,
}

impl BusDevice for TestdevRegion {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let state = lock(&self.state);
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .map_or(0, |addr| state.read(addr));
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut state = lock(&self.state);
        for (i, &byte) in data.iter().enumerate() {
            if let Some(addr) = offset.checked_add(i as u64) {
                state.write(self.region, addr, byte);
            }
        }
    }
}

/// The `membar` BAR: an empty QEMU container, so accesses hit unassigned memory.
struct EmptyRegion;

impl BusDevice for EmptyRegion {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _offset: u64, _data: &[u8]) {}
}

/// QEMU's pci-testdev.
pub struct PciTestdev {
    config: Mutex<PciConfig>,
    state: Arc<Mutex<TestdevState>>,
    mmio: Arc<TestdevRegion>,
    portio: Arc<TestdevRegion>,
    membar: Option<Arc<EmptyRegion>>,
}

impl Default for PciTestdev {
    fn default() -> Self {
        Self::new()
    }
}

impl PciTestdev {
    /// The device as `-device pci-testdev` creates it (no `membar`).
    pub fn new() -> Self {
        // BAR0 and BAR1 are fixed and valid; only a membar size can be refused.
        Self::with_membar(0).expect("pci-testdev's fixed BARs are valid")
    }

    /// `-device pci-testdev,membar=SIZE`: SIZE 0 means no BAR2, else a power of two >= 16.
    pub fn with_membar(membar: u64) -> Result<Self, PciConfigError> {
        let mut config = PciConfig::new(&PciIdentity {
            vendor: PCI_VENDOR_ID_REDHAT,
            device: PCI_DEVICE_ID_REDHAT_TEST,
            class: 0x00,
            subclass: 0xff,
            prog_if: 0,
            revision: 0,
            subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
            subsystem: PCI_SUBDEVICE_ID_QEMU,
        });
        config.add_bar(
            0,
            BarSpec {
                size: PCI_TESTDEV_MMIO_SIZE,
                kind: BarKind::Mem32,
                prefetchable: false,
            },
        )?;
        config.add_bar(
            1,
            BarSpec {
                size: PCI_TESTDEV_PORTIO_SIZE,
                kind: BarKind::Io,
                prefetchable: false,
            },
        )?;
        if membar != 0 {
            config.add_bar(
                2,
                BarSpec {
                    size: membar,
                    kind: BarKind::Mem64,
                    prefetchable: true,
                },
            )?;
        }
        config.set_interrupt_pin(0);
        // QEMU's pci_init_wmask: the device-specific area is plain read/write storage.
        config.set_write_mask(0x40, &[0xff; 0xc0])?;
        let state = Arc::new(Mutex::new(TestdevState::new()));
        let region = |region| {
            Arc::new(TestdevRegion {
                region,
                state: state.clone(),
            })
        };
        Ok(Self {
            config: Mutex::new(config),
            mmio: region(MMIO),
            portio: region(PORTIO),
            membar: (membar != 0).then(|| Arc::new(EmptyRegion)),
            state,
        })
    }

    fn config(&self) -> MutexGuard<'_, PciConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give the function an expansion ROM BAR of `size` bytes (QEMU's generic `romfile=`; the
    /// VMM backs the region with the file's contents).
    pub fn add_rom(&self, size: u64) -> Result<(), PciConfigError> {
        self.config().add_rom(size)
    }

    /// The regions (BARs) the device decodes, with their address space and size.
    pub fn regions(&self) -> Vec<(PciRegion, PciSpace, u64)> {
        self.config().regions()
    }

    /// The BusDevice serving one region's accesses (offset relative to the BAR base).
    pub fn region_device(&self, region: PciRegion) -> Option<Arc<dyn BusDevice>> {
        match region {
            PciRegion::Bar(0) => Some(self.mmio.clone()),
            PciRegion::Bar(1) => Some(self.portio.clone()),
            PciRegion::Bar(2) => self.membar.clone().map(|m| m as Arc<dyn BusDevice>),
            _ => None,
        }
    }

    /// The ioeventfds to register at the region's base + offset while it is mapped, and to
    /// move with it: the wildcard and datamatch tests of that region.
    pub fn ioevents(&self, region: PciRegion) -> Vec<IoEvent> {
        let index = match region {
            PciRegion::Bar(0) => MMIO,
            PciRegion::Bar(1) => PORTIO,
            _ => return Vec::new(),
        };
        lock(&self.state)
            .tests
            .iter()
            .filter(|t| t.region == index)
            .filter_map(|t| {
                Some(IoEvent {
                    offset: t.offset,
                    len: t.ioevent_len,
                    datamatch: t.match_data.then_some(u64::from(t.data)),
                    fd: t.notifier.clone()?,
                })
            })
            .collect()
    }
}

impl PciDevice for PciTestdev {
    fn config_read(&self, reg: usize) -> u32 {
        self.config().read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        self.config().write(reg, offset, data)
    }

    /// QEMU's `qdev_pci_testdev_reset` (no test selected) and `pci_do_device_reset`.
    fn reset(&self) -> Vec<BarChange> {
        lock(&self.state).current = None;
        self.config().reset()
    }
}

#[cfg(test)]
#[path = "testdev_tests.rs"]
mod tests;
