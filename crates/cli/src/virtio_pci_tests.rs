//! `-device virtio-*-pci` and `-drive if=virtio` on machines with and without PCI.

use crate::tests::{err, run};
use crate::{VirtioDeviceConfig, VirtioPciOptions};

#[test]
fn virtio_pci_devices_on_pc_and_q35() {
    for machine in ["pc", "q35"] {
        let c = run(&[
            "-M",
            machine,
            "-nic",
            "none",
            "-drive",
            "file=a.img,if=none,id=d0,format=raw",
            "-device",
            "virtio-blk-pci,drive=d0,bootindex=1,addr=5",
            "-device",
            "virtio-rng-pci",
            "-drive",
            "file=b.img,if=virtio,format=raw",
        ]);
        assert!(c.virtio.is_empty(), "{machine}: no virtio-mmio");
        let pci: Vec<_> = c.virtio_pci.iter().map(|d| d.pci.clone()).collect();
        assert_eq!(
            pci,
            vec![
                VirtioPciOptions {
                    bus: None,
                    addr: Some((5, 0)),
                    bootindex: Some(1),
                    disable_legacy: None,
                    id: None,
                },
                VirtioPciOptions::default(),
                VirtioPciOptions::default(),
            ]
        );
        assert!(
            matches!(&c.virtio_pci[0].device, VirtioDeviceConfig::Block(d) if d.file.ends_with("a.img"))
        );
        assert_eq!(c.virtio_pci[1].device, VirtioDeviceConfig::Rng);
        assert!(
            matches!(&c.virtio_pci[2].device, VirtioDeviceConfig::Block(d) if d.file.ends_with("b.img"))
        );
    }
    // virtio-*-device stays on virtio-mmio on pc.
    let c = run(&["-nic", "none", "-device", "virtio-rng-device"]);
    assert_eq!(c.virtio, vec![VirtioDeviceConfig::Rng]);
    assert!(c.virtio_pci.is_empty());
}

#[test]
fn microvm_keeps_mmio_and_has_no_pci_bus() {
    let c = run(&["-M", "microvm", "-drive", "file=b.img,if=virtio,format=raw"]);
    assert_eq!(c.virtio.len(), 1);
    assert!(c.virtio_pci.is_empty());
    assert_eq!(
        err(&["-M", "microvm", "-device", "virtio-rng-pci"]),
        "-device virtio-rng-pci: No 'PCI' bus found for device 'virtio-rng-pci'"
    );
}

#[test]
fn virtio_pci_option_errors() {
    assert!(err(&["-device", "virtio-rng-pci,addr=0x20"]).contains("Property 'addr'"));
    assert!(err(&["-device", "virtio-rng-pci,disable-modern=on"]).contains("modern interface"));
    assert!(err(&["-device", "virtio-rng-pci,disable-legacy=x"]).contains("on, off or auto"));
    assert!(err(&["-device", "virtio-rng-pci,bootindex=x"]).contains("bootindex"));
    assert!(err(&["-device", "virtio-rng-device,addr=3"]).contains("addr"));
    assert!(err(&["-device", "virtio-blk-pci"]).contains("'drive' is missing"));
    let c = run(&[
        "-nic",
        "none",
        "-device",
        "virtio-rng-pci,disable-legacy=on,disable-modern=off",
    ]);
    assert_eq!(c.virtio_pci.len(), 1);
}

#[test]
fn root_ports_and_bus_placement() {
    let c = run(&[
        "-M",
        "q35",
        "-device",
        "pcie-root-port,port=0x10,chassis=1,id=pci.1,bus=pcie.0,multifunction=on,addr=0x2",
        "-device",
        "pcie-root-port,port=17,chassis=2,id=pci.2,addr=0x2.0x1,slot=3",
        "-device",
        "virtio-rng-pci,bus=pci.2,addr=0x0",
    ]);
    let ports: Vec<_> = c
        .devices
        .iter()
        .filter_map(|d| match d {
            crate::DeviceConfig::PcieRootPort(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            crate::PcieRootPortConfig {
                id: Some("pci.1".into()),
                bus: Some("pcie.0".into()),
                addr: Some((2, 0)),
                multifunction: true,
                port: 0x10,
                chassis: 1,
                slot: 0,
            },
            crate::PcieRootPortConfig {
                id: Some("pci.2".into()),
                bus: None,
                addr: Some((2, 1)),
                multifunction: false,
                port: 17,
                chassis: 2,
                slot: 3,
            },
        ]
    );
    assert_eq!(c.virtio_pci[0].pci.bus.as_deref(), Some("pci.2"));
    // libvirt names the root bus for the VGA.
    let c = run(&["-M", "q35", "-device", "VGA,id=video0,bus=pcie.0,addr=0x1"]);
    assert!(matches!(
        &c.devices[..],
        [crate::DeviceConfig::Display(crate::DisplayDeviceConfig { bus: Some(b), addr: Some((1, 0)), .. })] if b == "pcie.0"
    ));
    assert!(
        crate::tests::err(&["-M", "pc", "-device", "VGA,bus=pcie.0"])
            .contains("Bus 'pcie.0' not found")
    );
    let err = |extra: &[&str]| {
        let mut a = vec!["-M", "q35", "-device", "pcie-root-port,id=p,chassis=1"];
        a.extend_from_slice(extra);
        crate::tests::err(&a)
    };
    assert!(err(&["-device", "virtio-rng-pci,bus=pci.9"])
        .starts_with("-device virtio-rng-pci: Bus 'pci.9' not found"));
    assert!(err(&["-device", "pcie-root-port,id=q,chassis=1"]).contains("Can't add chassis slot"));
    assert!(err(&["-device", "pcie-root-port,id=p,chassis=2"]).contains("Duplicate device ID 'p'"));
    assert!(err(&["-device", "pcie-root-port,id=q,chassis=2,port=300"]).contains("port"));
    assert!(err(&["-device", "pcie-root-port,id=q,chassis=2,bus=q"]).contains("Bus 'q' not found"));
    assert!(err(&["-device", "pci-testdev,bus=pci.0"]).contains("Bus 'pci.0' not found"));
    let microvm = crate::tests::err(&["-M", "microvm", "-device", "pcie-root-port"]);
    assert!(microvm.contains("No 'PCI' bus"), "{microvm}");
}
