//! `-machine none`: QEMU's empty machine, which libvirt starts to probe an emulator. No RAM, no
//! vCPUs, no devices: only the QMP monitors, answering the commands that describe rvmm
//! (info.rs) until `quit` or a signal. The seccomp sandbox is not entered: no guest runs, and
//! the only peer is the QMP client that started the process.

use super::protocol::{self, Decoded, QmpError};
use super::{commands, info, send, Client, Events, QmpServer};
use crate::daemon::{self, Pidfile};
use crate::VmmError;
use rvmm_cli::VmConfig;
use serde_json::{json, Value};
use std::io::Read;

/// Serve QMP with no guest; returns the exit status (0 after `quit`).
pub fn run_qmp_only(config: &VmConfig) -> Result<i32, VmmError> {
    let daemon = config.daemonize.then(daemon::daemonize).transpose()?;
    let _pidfile = config.pidfile.as_deref().map(Pidfile::create).transpose()?;
    // KVM's CPUID, for the CPU model queries; /dev/kvm missing is an error, as QEMU's
    // accel=kvm without KVM.
    let hv = rvmm_hypervisor::Hypervisor::open()?;
    info::set_host(info::HostCpu {
        supported: crate::builder::supported_cpuid(&hv)?,
    });
    drop(hv);
    let mut server = QmpServer::bind(&config.qmp)?;
    server.greet_waiting();
    daemon.map(daemon::Daemon::ready).transpose()?;
    let events = Events::default();
    let quit = serve(&mut server, &events);
    for path in server.paths() {
        let _ = std::fs::remove_file(path);
    }
    quit.map(|()| 0).map_err(|source| VmmError::Io {
        what: "-machine none: poll",
        source,
    })
}

/// Poll every monitor until a client sends `quit`.
fn serve(server: &mut QmpServer, events: &Events) -> std::io::Result<()> {
    loop {
        let mut fds: Vec<libc::pollfd> = server
            .poll_fds()
            .into_iter()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if fds.is_empty() {
            // No monitor: nothing can ever end this process but a signal (as QEMU).
            // SAFETY: pause has no arguments and only returns on a signal.
            unsafe { libc::pause() };
            continue;
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (index, fd) in fds.iter().enumerate() {
            if fd.revents != 0 && ready(server, index, events) {
                return Ok(());
            }
        }
    }
}

/// Monitor `index` is readable: accept a client or run what it sent; true after `quit`.
fn ready(server: &mut QmpServer, index: usize, events: &Events) -> bool {
    let Some(m) = server.monitors.get_mut(index) else {
        return false;
    };
    let Some(client) = &mut m.client else {
        if let Ok(stream) = m.listener.accept() {
            m.client = Client::new(stream);
            if let Some(c) = &m.client {
                c.greet();
            }
        }
        return false;
    };
    let mut buf = [0u8; 4096];
    let n = match client.reader.read(&mut buf) {
        Ok(0) | Err(_) => {
            events.remove(&client.session.writer);
            m.client = None;
            return false;
        }
        Ok(n) => n,
    };
    client.decoder.push(&buf[..n]);
    while let Some(item) = client.decoder.next_item() {
        if handle(client, item, events) {
            return true;
        }
    }
    false
}

/// One request; true if it was a successful `quit` (sent after its reply).
fn handle(client: &mut Client, item: Decoded, events: &Events) -> bool {
    let writer = client.session.writer.clone();
    let value = match item {
        Decoded::Error(desc) => {
            send(
                &writer,
                &protocol::error_reply(&QmpError::generic(desc), None),
            );
            return false;
        }
        Decoded::Value(v) => v,
    };
    let req = match protocol::parse_request(value) {
        Ok(req) => req,
        Err((id, err)) => {
            send(&writer, &protocol::error_reply(&err, id));
            return false;
        }
    };
    let negotiated = client.session.negotiated;
    let result = match req.command.as_str() {
        "qmp_capabilities" if negotiated => Err(QmpError::not_found(
            "Capabilities negotiation is already complete, command ignored",
        )),
        "qmp_capabilities" => match req.arguments.keys().next() {
            Some(key) => Err(commands::unexpected(key)),
            None => {
                client.session.negotiated = true;
                events.add(&writer);
                Ok(json!({}))
            }
        },
        _ if !negotiated => Err(QmpError::not_found(
            "Expecting capabilities negotiation with 'qmp_capabilities'",
        )),
        name => run(name, &req.arguments),
    };
    let quit = result.is_ok() && req.command == "quit";
    let msg = match result {
        Ok(ret) => protocol::reply(ret, req.id),
        Err(err) => protocol::error_reply(&err, req.id),
    };
    send(&writer, &msg);
    quit
}

/// A command with no guest: the descriptive ones, and the VM's that need no VM.
fn run(name: &str, args: &commands::Args) -> Result<Value, QmpError> {
    if let Some(result) = info::dispatch(name, args) {
        return result;
    }
    let no_args = || commands::no_args(args);
    match name {
        "query-version" => no_args().map(|()| protocol::version()),
        "query-commands" => no_args().map(|()| {
            commands::command_names()
                .into_iter()
                .map(|n| json!({"name": n}))
                .collect()
        }),
        "query-kvm" => no_args().map(|()| json!({"enabled": true, "present": true})),
        "query-status" => no_args()
            .map(|()| json!({"status": "prelaunch", "running": false, "singlestep": false})),
        "query-name" => no_args().map(|()| json!({})),
        "query-cpus-fast" => no_args().map(|()| json!([])),
        "query-migrate-capabilities" => no_args().map(|()| {
            super::migration::SETTABLE
                .iter()
                .map(|c| json!({"capability": c, "state": false}))
                .collect()
        }),
        "quit" => no_args().map(|()| json!({})),
        _ if commands::command_names().contains(&name) => Err(QmpError::generic(format!(
            "'{name}' needs a guest, and -machine none has none"
        ))),
        _ => Err(commands::not_found(name)),
    }
}
