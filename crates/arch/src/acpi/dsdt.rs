//! The DSDT (ACPI 6.5 section 5.2.11.1): COM1, the PS/2 keyboard and mouse, the PCI root bridge with its interrupt routing
//! (`_PRT` over PCI interrupt link devices, ACPI 6.5 sections 6.2.13 and 6.2.16), the
//! virtio-mmio transports, and the sleep packages that match the PM1a_CNT device (ACPI 6.5
//! section 7.4.2, values as QEMU's `build_dsdt`): \_S3 {1, 1, 0, 0} unless withdrawn (SLP_TYP 1
//! suspends to RAM) and \_S5 {0, 0, 0, 0} (SLP_TYP 0 powers off).

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, And, Arg, CreateDWordField, Device, EISAName, Else, Equal,
    If, Interrupt, Local, Memory32Fixed, Method, Name, NotEqual, One, Or, Package, Path,
    ResourceTemplate, Return, Scope, Store, Uuid, IO,
};
use acpi_tables::Aml;

use super::{sdt, AcpiConfig, PciHostBridge, VirtioMmioDevice, IOAPIC_ADDR};
use crate::layout::MMIO_GAP_START;
use crate::pci_irq::{PciIntxRouting, PCI_INTX_PINS, PCI_SLOTS};

/// COM1's ports and ISA IRQ.
const COM1_BASE: u16 = 0x3f8;
const COM1_IRQ: u32 = 4;
/// The i8042's ports and the keyboard's and mouse's ISA IRQs.
const I8042_DATA: u16 = 0x60;
const I8042_COMMAND: u16 = 0x64;
const KBD_IRQ: u32 = 1;
const MOUSE_IRQ: u32 = 12;
/// PCI configuration mechanism #1 ports (0xCF8 address, 0xCFC data).
const PCI_CONFIG_PORT: u16 = 0xcf8;

/// The DSDT AML for `config`.
pub fn dsdt(config: &AcpiConfig) -> Vec<u8> {
    let mut aml = Vec::new();
    // {PM1a SLP_TYP, PM1b SLP_TYP, reserved, reserved}, as QEMU writes them.
    if config.s3 {
        Name::new("_S3_".into(), &Package::new(vec![&1u8, &1u8, &0u8, &0u8]))
            .to_aml_bytes(&mut aml);
    }
    Name::new("_S5_".into(), &Package::new(vec![&0u8, &0u8, &0u8, &0u8])).to_aml_bytes(&mut aml);

    let com1_io = IO::new(COM1_BASE, COM1_BASE, 1, 8);
    let com1_irq = Interrupt::new(true, true, false, false, COM1_IRQ);
    let com1_crs = ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1_hid = Name::new("_HID".into(), &EISAName::new("PNP0501"));
    let com1_uid = Name::new("_UID".into(), &1u8);
    let com1_crs = Name::new("_CRS".into(), &com1_crs);
    let com1 = Device::new("COM1".into(), vec![&com1_hid, &com1_uid, &com1_crs]);

    // The PS/2 keyboard and mouse, as QEMU's i8042 describes them (hw/input/pckbd.c).
    let kbd_data = IO::new(I8042_DATA, I8042_DATA, 1, 1);
    let kbd_cmd = IO::new(I8042_COMMAND, I8042_COMMAND, 1, 1);
    let kbd_irq = Interrupt::new(true, false, false, false, KBD_IRQ);
    let kbd_crs = ResourceTemplate::new(vec![&kbd_data, &kbd_cmd, &kbd_irq]);
    let kbd_hid = Name::new("_HID".into(), &EISAName::new("PNP0303"));
    let kbd_sta = Name::new("_STA".into(), &0xfu8);
    let kbd_crs = Name::new("_CRS".into(), &kbd_crs);
    let kbd = Device::new("KBD_".into(), vec![&kbd_hid, &kbd_sta, &kbd_crs]);
    let mou_irq = Interrupt::new(true, false, false, false, MOUSE_IRQ);
    let mou_crs = ResourceTemplate::new(vec![&mou_irq]);
    let mou_hid = Name::new("_HID".into(), &EISAName::new("PNP0F13"));
    let mou_sta = Name::new("_STA".into(), &0xfu8);
    let mou_crs = Name::new("_CRS".into(), &mou_crs);
    let mou = Device::new("MOU_".into(), vec![&mou_hid, &mou_sta, &mou_crs]);

    let hid = EISAName::new(match config.pci {
        PciHostBridge::Pcie => "PNP0A08",
        _ => "PNP0A03",
    });
    let cid = EISAName::new("PNP0A03");
    // Bus 0-255, the config ports, the I/O space around them and the 32-bit MMIO window
    // from the gap up to the IOAPIC.
    let bus = AddressSpace::new_bus_number(0u16, 0xffu16);
    let cfg_ports = IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, 8);
    let io_low = AddressSpace::new_io(0u16, PCI_CONFIG_PORT - 1, None);
    let io_high = AddressSpace::new_io(0x0d00u16, 0xffffu16, None);
    let mem32 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        MMIO_GAP_START as u32,
        IOAPIC_ADDR - 1,
        None,
    );
    let pci_crs = ResourceTemplate::new(vec![&bus, &cfg_ports, &io_low, &io_high, &mem32]);
    let routing = match config.pci {
        PciHostBridge::Pcie => PciIntxRouting::Q35,
        _ => PciIntxRouting::I440fx,
    };
    let prt = prt_aml(routing);
    let prt = RawAml(&prt);
    let names = [
        Name::new("_HID".into(), &hid),
        Name::new("_CID".into(), &cid),
        Name::new("_UID".into(), &0u8),
        Name::new("_SEG".into(), &0u8),
        Name::new("_BBN".into(), &0u8),
        Name::new("_CRS".into(), &pci_crs),
    ];
    let mut pci0_children: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    pci0_children.push(&prt);
    let osc = osc_aml();
    let osc = RawAml(&osc);
    if config.pci == PciHostBridge::Pcie {
        pci0_children.push(&osc);
    }
    let pci0 = Device::new("PCI0".into(), pci0_children);
    let links: Vec<Vec<u8>> = (0..routing.pirq_count())
        .map(|pirq| link_aml(routing, pirq))
        .collect();
    let links: Vec<RawAml> = links.iter().map(|b| RawAml(b)).collect();

    let virtio: Vec<Vec<u8>> = config.virtio_mmio.iter().map(virtio_mmio_aml).collect();
    let virtio: Vec<RawAml> = virtio.iter().map(|b| RawAml(b)).collect();

    let mut children: Vec<&dyn Aml> = Vec::new();
    if config.com1 {
        children.push(&com1);
    }
    if config.i8042 {
        children.push(&kbd);
        children.push(&mou);
    }
    if config.pci != PciHostBridge::None {
        children.extend(links.iter().map(|l| l as &dyn Aml));
        children.push(&pci0);
    }
    children.extend(virtio.iter().map(|d| d as &dyn Aml));
    Scope::new(Path::new("\\_SB_"), children).to_aml_bytes(&mut aml);

    let mut t = sdt(b"DSDT", 2);
    t.append_slice(&aml);
    t.as_slice().to_vec()
}

/// The PCI Express root bridge's `_OSC` (PCI Firmware spec 3.3, 4.5; QEMU's
/// `build_q35_osc_method` with native hot-plug): the OS gets the controls it asks for among
/// native PCIe hot-plug, SHPC hot-plug, PME, AER and the PCIe capability (not LTR), so Linux's
/// pcieport services (pciehp, PME, AER) drive `pcie-root-port`s.
fn osc_aml() -> Vec<u8> {
    /// The controls the firmware grants (Control field bits 0-4).
    const GRANTED: u8 = 0x1f;
    /// Status bits in the first dword: unrecognized UUID, revision, capabilities masked.
    const UNKNOWN_UUID: u8 = 0x04;
    const UNKNOWN_REVISION: u8 = 0x08;
    const MASKED: u8 = 0x10;
    let (cdw1, cdw2, cdw3) = (Path::new("CDW1"), Path::new("CDW2"), Path::new("CDW3"));
    let pci_uuid = Uuid::new("33DB4D5B-1FF7-401C-9657-7441C03DD766");
    let create1 = CreateDWordField::new(&cdw1, &Arg(3), &0u8);
    let create2 = CreateDWordField::new(&cdw2, &Arg(3), &4u8);
    let create3 = CreateDWordField::new(&cdw3, &Arg(3), &8u8);
    let copy = Store::new(&Local(0), &cdw3);
    let mask = And::new(&Local(0), &Local(0), &GRANTED);
    let bad_revision = Or::new(&cdw1, &cdw1, &UNKNOWN_REVISION);
    let revision = NotEqual::new(&Arg(1), &One {});
    let check_revision = If::new(&revision, vec![&bad_revision]);
    let masked = Or::new(&cdw1, &cdw1, &MASKED);
    let changed = NotEqual::new(&cdw3, &Local(0));
    let check_masked = If::new(&changed, vec![&masked]);
    let grant = Store::new(&cdw3, &Local(0));
    let is_pci = Equal::new(&Arg(0), &pci_uuid);
    let pci = If::new(
        &is_pci,
        vec![
            &create2,
            &create3,
            &copy,
            &mask,
            &check_revision,
            &check_masked,
            &grant,
        ],
    );
    let unknown = Or::new(&cdw1, &cdw1, &UNKNOWN_UUID);
    let other = Else::new(vec![&unknown]);
    let ret = Return::new(&Arg(3));
    let mut out = Vec::new();
    Method::new("_OSC".into(), 4, false, vec![&create1, &pci, &other, &ret]).to_aml_bytes(&mut out);
    out
}

/// `_PRT`: every INTx pin of every slot of bus 0 to the link device of its PIRQ line (ACPI 6.5
/// table 6.2.13: address `slot << 16 | 0xffff` = any function, pin 0-3, source, source index 0).
fn prt_aml(routing: PciIntxRouting) -> Vec<u8> {
    let entries: Vec<(u32, u8, Path)> = (0..PCI_SLOTS)
        .flat_map(|slot| (0..PCI_INTX_PINS).map(move |pin| (slot, pin)))
        .map(|(slot, pin)| {
            let link = routing.link_name(routing.pirq(slot, pin));
            ((u32::from(slot) << 16) | 0xffff, pin, Path::new(&link))
        })
        .collect();
    let packages: Vec<Package> = entries
        .iter()
        .map(|(addr, pin, link)| Package::new(vec![addr, pin, link, &0u8]))
        .collect();
    let table = Package::new(packages.iter().map(|p| p as &dyn Aml).collect());
    let mut out = Vec::new();
    Name::new("_PRT".into(), &table).to_aml_bytes(&mut out);
    out
}

/// One PCI interrupt link (PNP0C0F) as QEMU's q35 GSI links: its only possible and current
/// setting is the GSI the VMM wires the PIRQ line to (level, active high, shared), and `_SRS`
/// accepts it without changing anything.
fn link_aml(routing: PciIntxRouting, pirq: u8) -> Vec<u8> {
    let irq = Interrupt::new(true, false, false, true, routing.pirq_gsi(pirq));
    let crs = ResourceTemplate::new(vec![&irq]);
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0C0F"));
    let uid = Name::new("_UID".into(), &pirq);
    let prs = Name::new("_PRS".into(), &crs);
    let crs = Name::new("_CRS".into(), &crs);
    let srs = Method::new("_SRS".into(), 1, false, vec![]);
    let name = routing.link_name(pirq);
    let mut out = Vec::new();
    Device::new(name.as_str().into(), vec![&hid, &uid, &prs, &crs, &srs]).to_aml_bytes(&mut out);
    out
}

/// AML already encoded (each virtio node is built on its own, as the tree borrows its parts).
struct RawAml<'a>(&'a [u8]);

impl Aml for RawAml<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.0);
    }
}

/// One transport as QEMU's `virtio_acpi_dsdt_add` describes it: Linux's virtio_mmio driver
/// binds to `_HID` "LNRO0005" and takes the window and the interrupt from `_CRS`.
fn virtio_mmio_aml(d: &VirtioMmioDevice) -> Vec<u8> {
    let window = Memory32Fixed::new(true, d.base, d.size);
    // Consumer, level-triggered, active high, exclusive (virtio 1.2 §4.2.2: the line stays
    // raised while InterruptStatus is non-zero).
    let irq = Interrupt::new(true, false, false, false, d.gsi);
    let crs = ResourceTemplate::new(vec![&window, &irq]);
    let hid = Name::new("_HID".into(), &"LNRO0005");
    let uid = Name::new("_UID".into(), &d.index);
    // Cache-coherent DMA.
    let cca = Name::new("_CCA".into(), &1u8);
    let crs = Name::new("_CRS".into(), &crs);
    let name = format!("VR{:02}", d.index % 100);
    let mut out = Vec::new();
    Device::new(name.as_str().into(), vec![&hid, &uid, &cca, &crs]).to_aml_bytes(&mut out);
    out
}
