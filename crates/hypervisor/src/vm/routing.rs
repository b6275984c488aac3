//! The VM's GSI routing table (KVM_SET_GSI_ROUTING), kept in user space because the ioctl
//! replaces the whole table: the in-kernel irqchip's routes and every MSI route live side by side
//! and each change sets them all again.

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use std::collections::BTreeMap;
use std::ops::Range;

/// Where an interrupt on one GSI goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsiRoute {
    /// A pin of an in-kernel interrupt controller (`KVM_IRQCHIP_*`).
    Irqchip { chip: u32, pin: u32 },
    /// A message to the LAPICs.
    Msi { address: u64, data: u32 },
}

/// The IOAPIC pins of the in-kernel irqchip.
pub const KERNEL_IOAPIC_PINS: u32 = 24;

/// Every GSI's routes; a GSI may reach several controllers (PIC and IOAPIC).
#[derive(Debug, Default)]
pub(crate) struct RoutingTable {
    routes: BTreeMap<u32, Vec<GsiRoute>>,
}

impl RoutingTable {
    /// The PC's wiring as QEMU sets it for its in-kernel irqchip (`kvm_pc_setup_irq_routing`):
    /// ISA IRQs 0-15 reach the two PICs except IRQ 2 (the cascade), and the IOAPIC takes GSI 0 on
    /// pin 2, as the MADT's interrupt source override and the MP table say, so the PIT (GSI 0)
    /// reaches the pin the guest programs for the timer. KVM's own default wires GSI 0 to pin 0.
    pub(crate) fn pc_irqchip() -> Self {
        let mut table = Self::default();
        for irq in 0..16u32 {
            if irq == 2 {
                continue;
            }
            let (chip, pin) = if irq < 8 {
                (KVM_IRQCHIP_PIC_MASTER, irq)
            } else {
                (KVM_IRQCHIP_PIC_SLAVE, irq - 8)
            };
            table.add(irq, GsiRoute::Irqchip { chip, pin });
        }
        for gsi in 0..KERNEL_IOAPIC_PINS {
            let pin = match gsi {
                0 => 2,
                2 => continue,
                _ => gsi,
            };
            table.add(
                gsi,
                GsiRoute::Irqchip {
                    chip: KVM_IRQCHIP_IOAPIC,
                    pin,
                },
            );
        }
        table
    }

    fn add(&mut self, gsi: u32, route: GsiRoute) {
        self.routes.entry(gsi).or_default().push(route);
    }

    /// Make `routes` the only routes of `gsi` (none removes it).
    pub(crate) fn set(&mut self, gsi: u32, routes: &[GsiRoute]) {
        if routes.is_empty() {
            self.routes.remove(&gsi);
        } else {
            self.routes.insert(gsi, routes.to_vec());
        }
    }

    /// Drop every route of the GSIs in `gsis`.
    pub(crate) fn clear(&mut self, gsis: Range<u32>) {
        self.routes.retain(|gsi, _| !gsis.contains(gsi));
    }

    /// The routes of `gsi`.
    #[cfg(test)]
    fn get(&self, gsi: u32) -> &[GsiRoute] {
        self.routes.get(&gsi).map_or(&[], Vec::as_slice)
    }

    /// The first GSI at or above `from` with no route.
    pub(crate) fn first_free(&self, from: u32) -> Option<u32> {
        (from..=u32::MAX).find(|gsi| !self.routes.contains_key(gsi))
    }

    /// The table as KVM takes it.
    pub(crate) fn to_kvm(&self) -> Option<KvmIrqRouting> {
        let mut table = KvmIrqRouting::new(0).ok()?;
        for (&gsi, routes) in &self.routes {
            for route in routes {
                table.push(kvm_entry(gsi, *route)).ok()?;
            }
        }
        Some(table)
    }
}

fn kvm_entry(gsi: u32, route: GsiRoute) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        ..Default::default()
    };
    match route {
        GsiRoute::Irqchip { chip, pin } => {
            entry.type_ = KVM_IRQ_ROUTING_IRQCHIP;
            entry.u.irqchip.irqchip = chip;
            entry.u.irqchip.pin = pin;
        }
        GsiRoute::Msi { address, data } => {
            entry.type_ = KVM_IRQ_ROUTING_MSI;
            entry.u.msi.address_lo = address as u32;
            entry.u.msi.address_hi = (address >> 32) as u32;
            entry.u.msi.data = data;
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc_wiring_matches_the_madt_override() {
        let table = RoutingTable::pc_irqchip();
        assert_eq!(
            table.get(0),
            &[
                GsiRoute::Irqchip {
                    chip: KVM_IRQCHIP_PIC_MASTER,
                    pin: 0
                },
                GsiRoute::Irqchip {
                    chip: KVM_IRQCHIP_IOAPIC,
                    pin: 2
                }
            ]
        );
        assert!(table.get(2).is_empty());
        assert_eq!(
            table.get(9),
            &[
                GsiRoute::Irqchip {
                    chip: KVM_IRQCHIP_PIC_SLAVE,
                    pin: 1
                },
                GsiRoute::Irqchip {
                    chip: KVM_IRQCHIP_IOAPIC,
                    pin: 9
                }
            ]
        );
        assert_eq!(
            table.get(23),
            &[GsiRoute::Irqchip {
                chip: KVM_IRQCHIP_IOAPIC,
                pin: 23
            }]
        );
        assert_eq!(table.first_free(24), Some(24));
        assert_eq!(table.first_free(0), Some(2));
        assert_eq!(table.to_kvm().unwrap().as_slice().len(), 15 + 23);
    }

    #[test]
    fn msi_routes_sit_beside_the_irqchip_routes() {
        let mut table = RoutingTable::pc_irqchip();
        let msi = GsiRoute::Msi {
            address: 0xfee0_0000,
            data: 0x41,
        };
        table.set(24, &[msi]);
        assert_eq!(table.first_free(24), Some(25));
        assert_eq!(table.to_kvm().unwrap().as_slice().len(), 15 + 23 + 1);
        table.set(24, &[]);
        assert_eq!(table.first_free(24), Some(24));
        table.clear(0..16);
        assert!(table.get(9).is_empty());
        assert_eq!(table.get(16).len(), 1);
    }
}
