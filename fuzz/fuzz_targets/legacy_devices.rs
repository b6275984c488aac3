//! The legacy PC register files a guest reaches with in/out and MMIO: CMOS/RTC, i8042 (data and
//! command ports), COM1, ACPI PM, IOAPIC, fw_cfg (selector/data and the DMA register, whose
//! descriptors live in guest memory). The devices are made fresh for each input.
//!
//! Input: a u16 length and that many bytes of guest memory (DMA descriptors and buffers), then
//! a sequence of accesses ([`rvmm_fuzz::Access`]).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_devices::legacy::fw_cfg::FW_CFG_DMA_PORT_LEN;
use rvmm_devices::legacy::*;
use rvmm_devices::BusDevice;
use rvmm_fuzz::{guest_memory, Access, NoMsi, NoVmControl, Reader};
use std::sync::Arc;

const MEM_SIZE: usize = 0x1_0000;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let init_len = usize::from(r.u16());
    let mem = guest_memory(MEM_SIZE, r.take(init_len));
    let ctl = Arc::new(NoVmControl);

    let cmos = Arc::new(Cmos::new(CmosMemory {
        below_4g: 128 << 20,
        above_4g: 0,
        cpus: 1,
    }));
    let kbd = I8042::new(ctl.clone());
    let serial = Arc::new(SerialDevice::new(Box::new(std::io::sink())).expect("serial"));
    let pm = Arc::new(AcpiPm::new(ctl.clone()));
    let ioapic = Arc::new(Ioapic::new(Arc::new(NoMsi)));
    let mut fw = FwCfg::new();
    fw.set_ram_size(MEM_SIZE as u64);
    fw.set_cpus(1, 1);
    let _ = fw.add_file("etc/fuzz", (0..=255).collect());
    let _ = fw.add_file("bootorder", b"/pci@i0cf8/*@1\n".to_vec());
    fw.enable_dma(mem);
    let fw = Arc::new(fw);

    let devices: [(Arc<dyn BusDevice>, u64); 8] = [
        (cmos, CMOS_PORT_LEN),
        (kbd.data_port(), I8042_PORT_LEN),
        (kbd.command_port(), I8042_PORT_LEN),
        (serial, SERIAL_PORT_LEN),
        (pm, PM_LEN),
        (ioapic, IOAPIC_LEN),
        (fw.dma_port(), FW_CFG_DMA_PORT_LEN),
        (fw, FW_CFG_PORT_LEN),
    ];
    let mut budget = 4096;
    while let Some(access) = Access::next(&mut r) {
        let (dev, len) = &devices[usize::from(access.device) % devices.len()];
        access.apply(dev.as_ref(), *len);
        budget -= 1;
        if budget == 0 {
            break;
        }
    }
});
