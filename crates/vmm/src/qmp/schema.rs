//! `query-qmp-schema`: the QAPI schema introspection of rvmm's own commands and events
//! (QEMU docs/devel/qapi-code-gen.rst "Client JSON Protocol introspection"). Each command's
//! arguments are the ones its handler takes, each return type what it returns; a test checks
//! that the table and the dispatch tables name the same commands. Type names are masked as
//! numbers, as QEMU's are; identical types share one entry.
//!
//! libvirt derives capabilities from paths in this schema (`device_add/$json-cli-hotplug`,
//! `screendump/arg-type/format/^png`, ...), so only what rvmm does is described. A command a
//! handler serves must be added here; a reply too complex to spell out is `any`.

use serde_json::{json, Value};
use std::collections::HashMap;

/// A QAPI type, as this table writes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    Str,
    Int,
    Bool,
    Any,
    Enum(&'static [&'static str]),
    Object(&'static [M]),
    Array(&'static Ty),
}

/// An object member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct M {
    pub name: &'static str,
    pub ty: Ty,
    pub optional: bool,
}

const fn m(name: &'static str, ty: Ty) -> M {
    M {
        name,
        ty,
        optional: false,
    }
}

const fn opt(name: &'static str, ty: Ty) -> M {
    M {
        name,
        ty,
        optional: true,
    }
}

const EMPTY: Ty = Ty::Object(&[]);
const STR_LIST: Ty = Ty::Array(&Ty::Str);

/// One command: its arguments and what it returns.
pub struct Command {
    pub name: &'static str,
    pub args: &'static [M],
    pub ret: Ty,
}

const fn cmd(name: &'static str, args: &'static [M], ret: Ty) -> Command {
    Command { name, args, ret }
}

const RUN_STATES: &[&str] = &[
    "inmigrate",
    "postmigrate",
    "shutdown",
    "prelaunch",
    "paused",
    "suspended",
    "running",
];
const SHUTDOWN_CAUSES: &[&str] = &[
    "host-error",
    "host-qmp-quit",
    "host-qmp-system-reset",
    "host-signal",
    "guest-shutdown",
    "guest-reset",
];
const MIGRATION_STATES: &[&str] = &["none", "setup", "active", "completed", "failed"];
const PROPERTY_INFO: Ty = Ty::Array(&Ty::Object(&[
    m("name", Ty::Str),
    m("type", Ty::Str),
    opt("description", Ty::Str),
    opt("default-value", Ty::Any),
]));
const MIGRATION_CAPABILITY: Ty = Ty::Object(&[m("capability", Ty::Str), m("state", Ty::Bool)]);

/// Every command rvmm serves.
pub static COMMANDS: &[Command] = &[
    cmd(
        "qmp_capabilities",
        &[opt("enable", Ty::Array(&Ty::Enum(&["oob"])))],
        EMPTY,
    ),
    cmd(
        "query-version",
        &[],
        Ty::Object(&[
            m(
                "qemu",
                Ty::Object(&[
                    m("major", Ty::Int),
                    m("minor", Ty::Int),
                    m("micro", Ty::Int),
                ]),
            ),
            m("package", Ty::Str),
        ]),
    ),
    cmd(
        "query-commands",
        &[],
        Ty::Array(&Ty::Object(&[m("name", Ty::Str)])),
    ),
    cmd(
        "query-status",
        &[],
        Ty::Object(&[
            m("running", Ty::Bool),
            m("singlestep", Ty::Bool),
            m("status", Ty::Enum(RUN_STATES)),
        ]),
    ),
    cmd("query-name", &[], Ty::Object(&[opt("name", Ty::Str)])),
    cmd(
        "query-kvm",
        &[],
        Ty::Object(&[m("enabled", Ty::Bool), m("present", Ty::Bool)]),
    ),
    cmd(
        "query-cpus-fast",
        &[],
        Ty::Array(&Ty::Object(&[
            m("cpu-index", Ty::Int),
            m("qom-path", Ty::Str),
            m("thread-id", Ty::Int),
            m("target", Ty::Enum(&["x86_64"])),
            m(
                "props",
                Ty::Object(&[
                    opt("socket-id", Ty::Int),
                    opt("die-id", Ty::Int),
                    opt("core-id", Ty::Int),
                    opt("thread-id", Ty::Int),
                ]),
            ),
        ])),
    ),
    cmd("stop", &[], EMPTY),
    cmd("cont", &[], EMPTY),
    cmd("system_reset", &[], EMPTY),
    cmd("system_powerdown", &[], EMPTY),
    cmd("system_wakeup", &[], EMPTY),
    cmd("x-query-exit-stats", &[], Ty::Any),
    cmd("query-vnc", &[], Ty::Any),
    // What libvirt asks while a domain starts and runs (queries.rs).
    cmd(
        "query-chardev",
        &[],
        Ty::Array(&Ty::Object(&[
            m("label", Ty::Str),
            m("filename", Ty::Str),
            m("frontend-open", Ty::Bool),
        ])),
    ),
    cmd("query-hotpluggable-cpus", &[], Ty::Any),
    cmd(
        "qom-list",
        &[m("path", Ty::Str)],
        Ty::Array(&Ty::Object(&[m("name", Ty::Str), m("type", Ty::Str)])),
    ),
    cmd(
        "qom-get",
        &[m("path", Ty::Str), m("property", Ty::Str)],
        Ty::Any,
    ),
    cmd("query-iothreads", &[], Ty::Array(&Ty::Any)),
    cmd("query-named-block-nodes", &[opt("flat", Ty::Bool)], Ty::Any),
    cmd("query-block", &[], Ty::Any),
    cmd("query-blockstats", &[opt("query-nodes", Ty::Bool)], Ty::Any),
    cmd(
        "query-stats",
        &[
            m("target", Ty::Enum(&["vm", "vcpu"])),
            opt(
                "providers",
                Ty::Array(&Ty::Object(&[
                    m("provider", Ty::Enum(&["kvm"])),
                    opt("names", STR_LIST),
                ])),
            ),
            opt("vcpus", STR_LIST),
        ],
        Ty::Any,
    ),
    cmd(
        "query-dirty-rate",
        &[],
        Ty::Object(&[
            m("status", Ty::Enum(&["unstarted", "measuring", "measured"])),
            m("start-time", Ty::Int),
            m("calc-time", Ty::Int),
            m("sample-pages", Ty::Int),
            m(
                "mode",
                Ty::Enum(&["page-sampling", "dirty-bitmap", "dirty-ring"]),
            ),
        ]),
    ),
    cmd(
        "query-stats-schemas",
        &[opt("provider", Ty::Enum(&["kvm"]))],
        Ty::Any,
    ),
    cmd("change-vnc-password", &[m("password", Ty::Str)], EMPTY),
    cmd(
        "send-key",
        &[m("keys", Ty::Array(&Ty::Any)), opt("hold-time", Ty::Int)],
        EMPTY,
    ),
    cmd(
        "input-send-event",
        &[
            m("events", Ty::Array(&Ty::Any)),
            opt("device", Ty::Str),
            opt("head", Ty::Int),
        ],
        EMPTY,
    ),
    cmd(
        "human-monitor-command",
        &[m("command-line", Ty::Str), opt("cpu-index", Ty::Int)],
        Ty::Str,
    ),
    cmd(
        "screendump",
        &[
            m("filename", Ty::Str),
            opt("device", Ty::Str),
            opt("head", Ty::Int),
            opt("format", Ty::Enum(&["ppm", "png"])),
        ],
        EMPTY,
    ),
    cmd(
        "migrate",
        &[
            m("uri", Ty::Str),
            opt("blk", Ty::Bool),
            opt("inc", Ty::Bool),
            opt("detach", Ty::Bool),
            opt("resume", Ty::Bool),
        ],
        EMPTY,
    ),
    cmd("migrate-incoming", &[m("uri", Ty::Str)], EMPTY),
    cmd("query-migrate", &[], Ty::Any),
    cmd(
        "migrate-set-capabilities",
        &[m("capabilities", Ty::Array(&MIGRATION_CAPABILITY))],
        EMPTY,
    ),
    cmd(
        "query-migrate-capabilities",
        &[],
        Ty::Array(&MIGRATION_CAPABILITY),
    ),
    // QEMU's `id` is a device id or QOM path; rvmm takes ids.
    cmd("device_del", &[m("id", Ty::Str)], EMPTY),
    cmd("quit", &[], EMPTY),
    // balloon.rs
    cmd("balloon", &[m("value", Ty::Int)], EMPTY),
    cmd("query-balloon", &[], Ty::Object(&[m("actual", Ty::Int)])),
    cmd(
        "qom-set",
        &[
            m("path", Ty::Str),
            m("property", Ty::Str),
            m("value", Ty::Any),
        ],
        EMPTY,
    ),
    // info.rs
    cmd(
        "query-target",
        &[],
        Ty::Object(&[m("arch", Ty::Enum(&["x86_64"]))]),
    ),
    cmd(
        "query-machines",
        &[opt("compat-props", Ty::Bool)],
        Ty::Array(&Ty::Object(&[
            m("name", Ty::Str),
            opt("alias", Ty::Str),
            opt("is-default", Ty::Bool),
            m("cpu-max", Ty::Int),
            m("hotpluggable-cpus", Ty::Bool),
            m("numa-mem-supported", Ty::Bool),
            m("deprecated", Ty::Bool),
            opt("default-cpu-type", Ty::Str),
            opt("default-ram-id", Ty::Str),
        ])),
    ),
    cmd(
        "qom-list-types",
        &[opt("implements", Ty::Str), opt("abstract", Ty::Bool)],
        Ty::Array(&Ty::Object(&[
            m("name", Ty::Str),
            opt("abstract", Ty::Bool),
            opt("parent", Ty::Str),
        ])),
    ),
    cmd(
        "device-list-properties",
        &[m("typename", Ty::Str)],
        PROPERTY_INFO,
    ),
    cmd(
        "qom-list-properties",
        &[m("typename", Ty::Str)],
        PROPERTY_INFO,
    ),
    cmd(
        "query-cpu-definitions",
        &[],
        Ty::Array(&Ty::Object(&[
            m("name", Ty::Str),
            opt("migration-safe", Ty::Bool),
            m("static", Ty::Bool),
            opt("unavailable-features", STR_LIST),
            m("typename", Ty::Str),
            opt("alias-of", Ty::Str),
            m("deprecated", Ty::Bool),
        ])),
    ),
    cmd(
        "query-cpu-model-expansion",
        &[
            m("type", Ty::Enum(&["static", "full"])),
            m(
                "model",
                Ty::Object(&[m("name", Ty::Str), opt("props", Ty::Any)]),
            ),
        ],
        Ty::Object(&[m(
            "model",
            Ty::Object(&[m("name", Ty::Str), opt("props", Ty::Any)]),
        )]),
    ),
    cmd(
        "query-command-line-options",
        &[opt("option", Ty::Str)],
        Ty::Array(&Ty::Object(&[
            m("option", Ty::Str),
            m(
                "parameters",
                Ty::Array(&Ty::Object(&[
                    m("name", Ty::Str),
                    m("type", Ty::Enum(&["string", "boolean", "number", "size"])),
                    opt("help", Ty::Str),
                    opt("default", Ty::Str),
                ])),
            ),
        ])),
    ),
    cmd("query-qmp-schema", &[], Ty::Array(&Ty::Any)),
    cmd(
        "query-sev-capabilities",
        &[],
        Ty::Object(&[
            m("pdh", Ty::Str),
            m("cert-chain", Ty::Str),
            m("cpu0-id", Ty::Str),
            m("cbitpos", Ty::Int),
            m("reduced-phys-bits", Ty::Int),
        ]),
    ),
    cmd("query-sgx-capabilities", &[], SGX_INFO),
    cmd("query-sgx", &[], SGX_INFO),
];

const SGX_INFO: Ty = Ty::Object(&[
    m("sgx", Ty::Bool),
    m("sgx1", Ty::Bool),
    m("sgx2", Ty::Bool),
    m("flc", Ty::Bool),
    m(
        "sections",
        Ty::Array(&Ty::Object(&[m("node", Ty::Int), m("size", Ty::Int)])),
    ),
]);

const SHUTDOWN_DATA: &[M] = &[m("guest", Ty::Bool), m("reason", Ty::Enum(SHUTDOWN_CAUSES))];

/// Every event rvmm emits, with its data.
pub static EVENTS: &[(&str, &[M])] = &[
    ("SHUTDOWN", SHUTDOWN_DATA),
    ("POWERDOWN", &[]),
    ("RESET", SHUTDOWN_DATA),
    ("STOP", &[]),
    ("RESUME", &[]),
    ("SUSPEND", &[]),
    ("WAKEUP", &[]),
    ("MIGRATION", &[m("status", Ty::Enum(MIGRATION_STATES))]),
    ("BALLOON_CHANGE", &[m("actual", Ty::Int)]),
    (
        "DEVICE_DELETED",
        &[opt("device", Ty::Str), m("path", Ty::Str)],
    ),
    (
        "BLOCK_IO_ERROR",
        &[
            m("device", Ty::Str),
            opt("node-name", Ty::Str),
            m("operation", Ty::Enum(&["read", "write"])),
            m("action", Ty::Enum(&["report", "ignore", "stop"])),
            opt("nospace", Ty::Bool),
            m("reason", Ty::Str),
        ],
    ),
];

/// Builds the SchemaInfo list, numbering each distinct type once.
struct Builder {
    entities: Vec<Value>,
    names: HashMap<String, String>,
}

impl Builder {
    /// The schema name of `ty`, adding its entity (and its members') on first use.
    fn name(&mut self, ty: &Ty) -> String {
        let builtin = match ty {
            Ty::Str => Some(("str", "string")),
            Ty::Int => Some(("int", "int")),
            Ty::Bool => Some(("bool", "boolean")),
            Ty::Any => Some(("any", "value")),
            _ => None,
        };
        if let Some((name, json_type)) = builtin {
            let key = format!("builtin:{name}");
            if let std::collections::hash_map::Entry::Vacant(e) = self.names.entry(key) {
                e.insert(name.into());
                self.entities
                    .push(json!({"name": name, "meta-type": "builtin", "json-type": json_type}));
            }
            return name.into();
        }
        let entity = match ty {
            Ty::Enum(values) => json!({
                "meta-type": "enum",
                "values": values,
                "members": values.iter().map(|v| json!({"name": v})).collect::<Vec<_>>(),
            }),
            Ty::Array(element) => {
                let element = self.name(element);
                json!({"meta-type": "array", "element-type": element})
            }
            Ty::Object(members) => {
                let members: Vec<Value> = members
                    .iter()
                    .map(|mem| {
                        let mut v = json!({"name": mem.name, "type": self.name(&mem.ty)});
                        if mem.optional {
                            v["default"] = Value::Null;
                        }
                        v
                    })
                    .collect();
                json!({"meta-type": "object", "members": members})
            }
            _ => unreachable!("builtins handled above"),
        };
        let key = entity.to_string();
        if let Some(name) = self.names.get(&key) {
            return name.clone();
        }
        let name = match ty {
            // QEMU names array types after their element: "[int]".
            Ty::Array(_) => format!("[{}]", entity["element-type"].as_str().unwrap_or("")),
            _ => self.names.len().to_string(),
        };
        self.names.insert(key, name.clone());
        let mut entity = entity;
        entity["name"] = json!(name);
        self.entities.push(entity);
        name
    }
}

/// The `query-qmp-schema` reply.
pub fn schema() -> Value {
    let mut b = Builder {
        entities: Vec::new(),
        names: HashMap::new(),
    };
    let mut out = Vec::new();
    for c in COMMANDS {
        let arg_type = b.name(&Ty::Object(c.args));
        let ret_type = b.name(&c.ret);
        out.push(json!({
            "name": c.name,
            "meta-type": "command",
            "arg-type": arg_type,
            "ret-type": ret_type,
        }));
    }
    for (name, data) in EVENTS {
        let arg_type = b.name(&Ty::Object(data));
        out.push(json!({"name": name, "meta-type": "event", "arg-type": arg_type}));
    }
    out.extend(b.entities);
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_every_served_command_once() {
        let mut served: Vec<&str> = super::super::commands::command_names();
        served.sort_unstable();
        let mut described: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        described.sort_unstable();
        assert_eq!(
            served, described,
            "a command is served without a schema entry (schema.rs) or the reverse"
        );
    }

    #[test]
    fn types_are_defined_once_and_referenced_names_exist() {
        let Value::Array(schema) = schema() else {
            panic!("not a list")
        };
        let names: Vec<&str> = schema.iter().filter_map(|e| e["name"].as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a name is defined twice");
        let exists = |n: &str| names.contains(&n);
        for e in &schema {
            for key in ["arg-type", "ret-type", "element-type"] {
                if let Some(t) = e[key].as_str() {
                    assert!(exists(t), "{e}: {key} {t} undefined");
                }
            }
            if let Some(members) = e["members"].as_array() {
                for mem in members {
                    if let Some(t) = mem["type"].as_str() {
                        assert!(exists(t), "{e}: member type {t} undefined");
                    }
                }
            }
        }
        let screendump = schema.iter().find(|e| e["name"] == "screendump").unwrap();
        assert_eq!(screendump["meta-type"], "command");
    }
}
