//! The device types rvmm has and their properties, as QEMU's qdev/QOM describe them: one table
//! per device, shared by the option parser (the keys `-device TYPE` takes), `-device help` and
//! `-device TYPE,help`, and QMP (`qom-list-types`, `device-list-properties`).
//!
//! Adding a device: write its `DeviceType` (its properties are exactly the keys the parser
//! accepts, less `driver` and `id`) and list it in [`DEVICE_TYPES`]. A type rvmm builds itself
//! but `-device` cannot create (the i8042, the chipset functions) has `user_creatable: false`;
//! its properties are the ones `-global TYPE.PROP=` sets.

/// A property's QOM type, as `device-list-properties` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropType {
    Str,
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Int32,
    Size,
    OnOffAuto,
    /// `link<TYPE>`: the id of an object of that type.
    Link(&'static str),
}

impl PropType {
    pub fn qom_name(self) -> String {
        match self {
            PropType::Str => "str".into(),
            PropType::Bool => "bool".into(),
            PropType::Uint8 => "uint8".into(),
            PropType::Uint16 => "uint16".into(),
            PropType::Uint32 => "uint32".into(),
            PropType::Int32 => "int32".into(),
            PropType::Size => "size".into(),
            PropType::OnOffAuto => "OnOffAuto".into(),
            PropType::Link(t) => format!("link<{t}>"),
        }
    }
}

/// A property's default, as `device-list-properties` reports it (`default-value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropDefault {
    Int(i64),
    Bool(bool),
    Str(&'static str),
}

/// One property of a device type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prop {
    pub name: &'static str,
    pub ty: PropType,
    pub default: Option<PropDefault>,
    pub description: Option<&'static str>,
}

const fn prop(name: &'static str, ty: PropType) -> Prop {
    Prop {
        name,
        ty,
        default: None,
        description: None,
    }
}

const fn prop_default(name: &'static str, ty: PropType, default: PropDefault) -> Prop {
    Prop {
        name,
        ty,
        default: Some(default),
        description: None,
    }
}

/// `-device help`'s groups (QEMU's `DeviceCategory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    Bridge,
    Usb,
    Storage,
    Network,
    Input,
    Display,
    Sound,
    Misc,
    Uncategorized,
}

impl Category {
    fn title(self) -> &'static str {
        match self {
            Category::Bridge => "Controller/Bridge/Hub",
            Category::Usb => "USB",
            Category::Storage => "Storage",
            Category::Network => "Network",
            Category::Input => "Input",
            Category::Display => "Display",
            Category::Sound => "Sound",
            Category::Misc => "Misc",
            Category::Uncategorized => "Uncategorized",
        }
    }
}

/// One device type.
#[derive(Debug, PartialEq, Eq)]
pub struct DeviceType {
    pub name: &'static str,
    /// The QOM parent (an abstract type of [`ABSTRACT_TYPES`]).
    pub parent: &'static str,
    /// The bus it plugs into (`PCI`, `ISA`, `virtio-bus`, `IDE`), as `-device help` prints it.
    pub bus: Option<&'static str>,
    pub category: Category,
    pub desc: Option<&'static str>,
    /// False for devices the machine creates (`-device` refuses them; `-global` may set them).
    pub user_creatable: bool,
    pub props: &'static [Prop],
}

impl DeviceType {
    /// The keys `-device NAME,...` accepts: `driver`, `id`, `bus` for a device that plugs into
    /// a bus (QEMU's `qdev_device_add` option, not a property) and the properties.
    pub fn option_keys(&self) -> Vec<&'static str> {
        let mut keys = vec!["driver", "id"];
        keys.extend(self.props.iter().map(|p| p.name));
        if self.bus.is_some() && !keys.contains(&"bus") {
            keys.push("bus");
        }
        keys
    }
}

/// `addr` of every PCI device.
const PCI_ADDR: Prop = Prop {
    name: "addr",
    ty: PropType::Int32,
    default: Some(PropDefault::Int(-1)),
    description: Some("Slot and optional function number, example: 06.0 or 06"),
};

/// The virtio-pci proxy's properties rvmm implements (virtio_pci.rs).
const VIRTIO_PCI: [Prop; 4] = [
    PCI_ADDR,
    prop_default("bootindex", PropType::Int32, PropDefault::Int(-1)),
    Prop {
        name: "disable-legacy",
        ty: PropType::OnOffAuto,
        default: Some(PropDefault::Str("auto")),
        description: Some("on/off/auto"),
    },
    Prop {
        name: "disable-modern",
        ty: PropType::Bool,
        default: Some(PropDefault::Bool(false)),
        description: None,
    },
];

/// `multifunction` of every PCI device (rvmm implements it on pcie-root-port).
const PCI_MULTIFUNCTION: Prop = Prop {
    name: "multifunction",
    ty: PropType::Bool,
    default: Some(PropDefault::Bool(false)),
    description: Some("on/off"),
};

const SHARE_RW: Prop = prop_default("share-rw", PropType::Bool, PropDefault::Bool(false));

macro_rules! device {
    ($id:ident, $name:literal, $parent:literal, $bus:expr, $cat:ident, $desc:expr, $user:literal, [$($p:expr),* $(,)?]) => {
        pub static $id: DeviceType = DeviceType {
            name: $name,
            parent: $parent,
            bus: $bus,
            category: Category::$cat,
            desc: $desc,
            user_creatable: $user,
            props: &[$($p),*],
        };
    };
}

device!(
    ISA_DEBUG_EXIT,
    "isa-debug-exit",
    "isa-device",
    Some("ISA"),
    Misc,
    None,
    true,
    [
        prop_default("iobase", PropType::Uint16, PropDefault::Int(0x501)),
        prop_default("iosize", PropType::Uint16, PropDefault::Int(2)),
    ]
);
// COM1 only (lib.rs): index 0 at 0x3f8, IRQ 4.
device!(
    ISA_SERIAL,
    "isa-serial",
    "isa-device",
    Some("ISA"),
    Input,
    None,
    true,
    [
        prop("chardev", PropType::Str),
        prop_default("index", PropType::Uint32, PropDefault::Int(-1)),
        prop_default("iobase", PropType::Uint32, PropDefault::Int(-1)),
        prop_default("irq", PropType::Uint32, PropDefault::Int(-1)),
    ]
);
device!(
    PC_TESTDEV,
    "pc-testdev",
    "isa-device",
    Some("ISA"),
    Misc,
    None,
    true,
    []
);
device!(
    PCI_TESTDEV,
    "pci-testdev",
    "pci-device",
    Some("PCI"),
    Misc,
    Some("PCI Test Device"),
    true,
    [
        PCI_ADDR,
        prop("romfile", PropType::Str),
        prop_default("membar", PropType::Size, PropDefault::Int(0)),
    ]
);
device!(
    VGA,
    "VGA",
    "pci-device",
    Some("PCI"),
    Display,
    None,
    true,
    [PCI_ADDR]
);
device!(
    BOCHS_DISPLAY,
    "bochs-display",
    "pci-device",
    Some("PCI"),
    Display,
    None,
    true,
    [PCI_ADDR]
);

device!(
    PCIE_ROOT_PORT,
    "pcie-root-port",
    "pcie-root-port-base",
    Some("PCI"),
    Bridge,
    Some("PCI Express Root Port"),
    true,
    [
        PCI_ADDR,
        PCI_MULTIFUNCTION,
        prop_default("port", PropType::Uint8, PropDefault::Int(0)),
        prop_default("chassis", PropType::Uint8, PropDefault::Int(0)),
        prop_default("slot", PropType::Uint16, PropDefault::Int(0)),
    ]
);

// virtio over virtio-mmio ("-device" form) and over PCI.
const BLK: [Prop; 2] = [prop("drive", PropType::Str), SHARE_RW];
const NET: [Prop; 2] = [prop("netdev", PropType::Str), prop("mac", PropType::Str)];
const RNG: Prop = prop("rng", PropType::Link("rng-backend"));
const POINTER: [Prop; 2] = [
    prop("serial", PropType::Str),
    prop_default("wheel-axis", PropType::Bool, PropDefault::Bool(true)),
];
device!(
    VIRTIO_BLK_DEVICE,
    "virtio-blk-device",
    "virtio-device",
    Some("virtio-bus"),
    Storage,
    Some("Virtio Block Device"),
    true,
    [BLK[0], BLK[1]]
);
device!(
    VIRTIO_NET_DEVICE,
    "virtio-net-device",
    "virtio-device",
    Some("virtio-bus"),
    Network,
    None,
    true,
    [NET[0], NET[1]]
);
device!(
    VIRTIO_RNG_DEVICE,
    "virtio-rng-device",
    "virtio-device",
    Some("virtio-bus"),
    Misc,
    None,
    true,
    [RNG]
);
device!(
    VIRTIO_TABLET_DEVICE,
    "virtio-tablet-device",
    "virtio-device",
    Some("virtio-bus"),
    Input,
    None,
    true,
    [POINTER[0], POINTER[1]]
);
device!(
    VIRTIO_MOUSE_DEVICE,
    "virtio-mouse-device",
    "virtio-device",
    Some("virtio-bus"),
    Input,
    None,
    true,
    [POINTER[0], POINTER[1]]
);
device!(
    VIRTIO_KEYBOARD_DEVICE,
    "virtio-keyboard-device",
    "virtio-device",
    Some("virtio-bus"),
    Input,
    None,
    true,
    [POINTER[0]]
);
device!(
    VIRTIO_BLK_PCI,
    "virtio-blk-pci",
    "virtio-pci",
    Some("PCI"),
    Storage,
    Some("Virtio Block Device"),
    true,
    [
        BLK[0],
        BLK[1],
        VIRTIO_PCI[0],
        VIRTIO_PCI[1],
        VIRTIO_PCI[2],
        VIRTIO_PCI[3],
    ]
);
device!(
    VIRTIO_NET_PCI,
    "virtio-net-pci",
    "virtio-pci",
    Some("PCI"),
    Network,
    None,
    true,
    [
        NET[0],
        NET[1],
        VIRTIO_PCI[0],
        VIRTIO_PCI[1],
        VIRTIO_PCI[2],
        VIRTIO_PCI[3],
    ]
);
device!(
    VIRTIO_RNG_PCI,
    "virtio-rng-pci",
    "virtio-pci",
    Some("PCI"),
    Misc,
    None,
    true,
    [
        RNG,
        VIRTIO_PCI[0],
        VIRTIO_PCI[1],
        VIRTIO_PCI[2],
        VIRTIO_PCI[3],
    ]
);
device!(
    VIRTIO_TABLET_PCI,
    "virtio-tablet-pci",
    "virtio-pci",
    Some("PCI"),
    Input,
    None,
    true,
    [
        POINTER[0],
        POINTER[1],
        VIRTIO_PCI[0],
        VIRTIO_PCI[1],
        VIRTIO_PCI[2],
        VIRTIO_PCI[3],
    ]
);
device!(
    VIRTIO_MOUSE_PCI,
    "virtio-mouse-pci",
    "virtio-pci",
    Some("PCI"),
    Input,
    None,
    true,
    [
        POINTER[0],
        POINTER[1],
        VIRTIO_PCI[0],
        VIRTIO_PCI[1],
        VIRTIO_PCI[2],
        VIRTIO_PCI[3],
    ]
);
device!(
    VIRTIO_KEYBOARD_PCI,
    "virtio-keyboard-pci",
    "virtio-pci",
    Some("PCI"),
    Input,
    None,
    true,
    [
        POINTER[0],
        VIRTIO_PCI[0],
        VIRTIO_PCI[1],
        VIRTIO_PCI[2],
        VIRTIO_PCI[3],
    ]
);
// virtio-balloon (docs/BALLOON.md): the properties rvmm implements, with QEMU 7.2's defaults.
const BALLOON: [Prop; 3] = [
    prop_default("deflate-on-oom", PropType::Bool, PropDefault::Bool(false)),
    prop_default(
        "free-page-reporting",
        PropType::Bool,
        PropDefault::Bool(false),
    ),
    prop_default("page-poison", PropType::Bool, PropDefault::Bool(true)),
];
device!(
    VIRTIO_BALLOON_DEVICE,
    "virtio-balloon-device",
    "virtio-device",
    Some("virtio-bus"),
    Misc,
    None,
    true,
    [BALLOON[0], BALLOON[1], BALLOON[2]]
);
device!(
    VIRTIO_BALLOON_PCI,
    "virtio-balloon-pci",
    "virtio-pci",
    Some("PCI"),
    Misc,
    None,
    true,
    [
        BALLOON[0],
        BALLOON[1],
        BALLOON[2],
        VIRTIO_PCI[0],
        VIRTIO_PCI[1],
        VIRTIO_PCI[2],
        VIRTIO_PCI[3],
    ]
);
// The USB 3 controller, with no USB devices yet (docs/USB.md).
device!(
    QEMU_XHCI,
    "qemu-xhci",
    "pci-xhci",
    Some("PCI"),
    Usb,
    None,
    true,
    [
        PCI_ADDR,
        prop_default("p2", PropType::Uint32, PropDefault::Int(4)),
        prop_default("p3", PropType::Uint32, PropDefault::Int(4)),
    ]
);
const IDE: [Prop; 5] = [
    prop("drive", PropType::Str),
    prop("bus", PropType::Str),
    prop_default("unit", PropType::Uint32, PropDefault::Int(u32::MAX as i64)),
    prop_default("bootindex", PropType::Int32, PropDefault::Int(-1)),
    SHARE_RW,
];
device!(
    IDE_HD,
    "ide-hd",
    "ide-device",
    Some("IDE"),
    Storage,
    Some("virtual IDE disk"),
    true,
    [IDE[0], IDE[1], IDE[2], IDE[3], IDE[4],]
);
device!(
    IDE_CD,
    "ide-cd",
    "ide-device",
    Some("IDE"),
    Storage,
    Some("virtual IDE CD-ROM"),
    true,
    [IDE[0], IDE[1], IDE[2], IDE[3], IDE[4],]
);

// Built by the machine: `-global` may set these properties.
device!(
    ICH9_LPC,
    "ICH9-LPC",
    "pci-device",
    Some("PCI"),
    Bridge,
    None,
    false,
    [
        prop_default("disable_s3", PropType::Uint8, PropDefault::Int(0)),
        // rvmm never offers S4: only disable_s4=1 is accepted (lib.rs `global`).
        prop_default("disable_s4", PropType::Uint8, PropDefault::Int(1)),
    ]
);
device!(
    PIIX4_PM,
    "PIIX4_PM",
    "pci-device",
    Some("PCI"),
    Bridge,
    Some("PM"),
    false,
    [
        prop_default("disable_s3", PropType::Uint8, PropDefault::Int(0)),
        // rvmm never offers S4: only disable_s4=1 is accepted (lib.rs `global`).
        prop_default("disable_s4", PropType::Uint8, PropDefault::Int(1)),
    ]
);
device!(
    I8042,
    "i8042",
    "isa-device",
    Some("ISA"),
    Input,
    None,
    false,
    []
);
// q35's SATA controller (00:1f.2), where `-device ide-hd,bus=ide.N` plugs in.
device!(
    ICH9_AHCI,
    "ich9-ahci",
    "pci-device",
    Some("PCI"),
    Storage,
    Some("ICH9 AHCI"),
    false,
    []
);

/// Every device type rvmm has, in `-device help` order within each category.
pub static DEVICE_TYPES: &[&DeviceType] = &[
    &ISA_DEBUG_EXIT,
    &ISA_SERIAL,
    &PC_TESTDEV,
    &PCI_TESTDEV,
    &VGA,
    &BOCHS_DISPLAY,
    &PCIE_ROOT_PORT,
    &VIRTIO_BLK_DEVICE,
    &VIRTIO_NET_DEVICE,
    &VIRTIO_RNG_DEVICE,
    &VIRTIO_TABLET_DEVICE,
    &VIRTIO_MOUSE_DEVICE,
    &VIRTIO_KEYBOARD_DEVICE,
    &VIRTIO_BLK_PCI,
    &VIRTIO_NET_PCI,
    &VIRTIO_RNG_PCI,
    &VIRTIO_TABLET_PCI,
    &VIRTIO_MOUSE_PCI,
    &VIRTIO_KEYBOARD_PCI,
    &VIRTIO_BALLOON_DEVICE,
    &VIRTIO_BALLOON_PCI,
    &QEMU_XHCI,
    &IDE_HD,
    &IDE_CD,
    &ICH9_LPC,
    &PIIX4_PM,
    &I8042,
    &ICH9_AHCI,
];

/// The abstract QOM types the concrete ones derive from: (name, parent).
pub static ABSTRACT_TYPES: &[(&str, Option<&str>)] = &[
    ("object", None),
    ("device", Some("object")),
    ("pci-device", Some("device")),
    ("isa-device", Some("device")),
    ("sys-bus-device", Some("device")),
    ("virtio-device", Some("device")),
    ("virtio-pci", Some("pci-device")),
    ("pci-xhci", Some("pci-device")),
    ("pci-bridge", Some("pci-device")),
    ("pcie-port", Some("pci-bridge")),
    ("pcie-slot", Some("pcie-port")),
    ("pcie-root-port-base", Some("pcie-slot")),
    ("ide-device", Some("device")),
    ("machine", Some("object")),
    ("x86-machine", Some("machine")),
    ("generic-pc-machine", Some("x86-machine")),
    ("cpu", Some("device")),
    ("x86_64-cpu", Some("cpu")),
    ("accel", Some("object")),
    ("rng-backend", Some("object")),
    ("memory-backend", Some("object")),
    ("secret_common", Some("object")),
];

/// The device type named `name`, if rvmm has it.
pub fn find(name: &str) -> Option<&'static DeviceType> {
    DEVICE_TYPES.iter().copied().find(|d| d.name == name)
}

fn json_default(d: PropDefault) -> String {
    match d {
        PropDefault::Int(i) => i.to_string(),
        PropDefault::Bool(b) => b.to_string(),
        PropDefault::Str(s) => format!("\"{s}\""),
    }
}

/// `-device TYPE,help`, as QEMU 7.2's `qdev_device_help` prints it (sorted lines).
pub fn device_help(device: &DeviceType) -> String {
    if device.props.is_empty() {
        return format!("There are no options for {}.\n", device.name);
    }
    let mut lines: Vec<String> = device
        .props
        .iter()
        .map(|p| {
            let mut line = format!("  {}=<{}>", p.name, p.ty.qom_name());
            if p.description.is_some() || p.default.is_some() {
                while line.len() < 24 {
                    line.push(' ');
                }
                line.push_str(" - ");
            }
            if let Some(desc) = p.description {
                line.push_str(desc);
            }
            if let Some(d) = p.default {
                line.push_str(&format!(" (default: {})", json_default(d)));
            }
            line
        })
        .collect();
    lines.sort();
    format!("{} options:\n{}\n", device.name, lines.join("\n"))
}

/// `-device help`: the user-creatable devices by category, as QEMU's `qdev_print_devinfos`.
pub fn devices_help() -> String {
    let mut out = String::new();
    let mut categories: Vec<Category> = DEVICE_TYPES.iter().map(|d| d.category).collect();
    categories.sort();
    categories.dedup();
    for cat in categories {
        let mut devices: Vec<&DeviceType> = DEVICE_TYPES
            .iter()
            .copied()
            .filter(|d| d.category == cat && d.user_creatable)
            .collect();
        if devices.is_empty() {
            continue;
        }
        devices.sort_by_key(|d| d.name);
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{} devices:\n", cat.title()));
        for d in devices {
            out.push_str(&format!("name \"{}\"", d.name));
            if let Some(bus) = d.bus {
                out.push_str(&format!(", bus {bus}"));
            }
            if let Some(desc) = d.desc {
                out.push_str(&format!(", desc \"{desc}\""));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parents_known() {
        let mut names: Vec<&str> = DEVICE_TYPES.iter().map(|d| d.name).collect();
        names.extend(ABSTRACT_TYPES.iter().map(|(n, _)| *n));
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "a type is listed twice");
        for d in DEVICE_TYPES {
            assert!(
                ABSTRACT_TYPES.iter().any(|(n, _)| *n == d.parent),
                "{}: parent {}",
                d.name,
                d.parent
            );
            let mut props: Vec<&str> = d.props.iter().map(|p| p.name).collect();
            let n = props.len();
            props.sort_unstable();
            props.dedup();
            assert_eq!(props.len(), n, "{}: a property is listed twice", d.name);
        }
    }

    #[test]
    fn help_texts_have_qemu_shape() {
        let help = device_help(&VIRTIO_BLK_PCI);
        assert!(help.starts_with("virtio-blk-pci options:\n"), "{help}");
        assert!(help.contains(
            "  addr=<int32>           - Slot and optional function number, example: 06.0 or 06 (default: -1)\n"
        ), "{help}");
        assert!(help.contains("  drive=<str>\n"), "{help}");
        assert_eq!(
            device_help(&PC_TESTDEV),
            "There are no options for pc-testdev.\n"
        );
        let all = devices_help();
        assert!(all.contains("name \"virtio-blk-pci\", bus PCI, desc \"Virtio Block Device\"\n"));
        assert!(!all.contains("ICH9-LPC"), "not user creatable");
    }
}
