//! The QMP dispatcher of a real VM: every command with fuzzed arguments, against a paused microvm
//! (the built-in guest, `-S`) running on a thread of the fuzzer, reached through its QMP socket as
//! a client would. A panic anywhere in rvmm aborts the fuzzer; a VM that stops answering is a
//! finding too (the target panics).
//!
//! Left out, decided on rvmm's own decoding of the input: commands that write files or run
//! programs (`migrate`, `migrate-incoming`, `screendump`, HMP `screendump`), end the VM (`quit`)
//! or run the guest (`cont`, after which the built-in guest powers off).
//!
//! Input: the bytes a client sends after `qmp_capabilities`, on a fresh connection each time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_vmm::qmp::protocol::{parse_request, Decoded, Decoder};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const LEFT_OUT: &[&str] = &["quit", "cont", "migrate", "migrate-incoming", "screendump"];

/// The socket of the VM, started on first use.
fn vm_socket() -> &'static PathBuf {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rvmm-fuzz-qmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz temp dir");
        let socket = dir.join("qmp.sock");
        let args = [
            "-M",
            "microvm",
            "-m",
            "16",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            // The balloon's commands and QOM properties (docs/BALLOON.md) get fuzzed too.
            "-device",
            "virtio-balloon-device,id=balloon0",
            "-sandbox",
            "off",
            "-qmp",
            &format!("unix:{},server=on,wait=off", socket.display()),
        ];
        let config = match rvmm_cli::parse_args(args.iter().map(std::ffi::OsString::from)) {
            Ok(rvmm_cli::Action::Run(config)) => config,
            _ => panic!("the fuzz VM's command line does not parse"),
        };
        std::thread::spawn(move || {
            let status = rvmm_vmm::run(&config);
            panic!("the fuzz VM ended: {status:?}");
        });
        for _ in 0..500 {
            if UnixStream::connect(&socket).is_ok() {
                return socket;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the fuzz VM's QMP socket did not appear");
    })
}

/// Does rvmm's own decoder find a left-out command in `data`?
fn leaves_out(data: &[u8]) -> bool {
    let mut decoder = Decoder::default();
    decoder.push(data);
    while let Some(item) = decoder.next_item() {
        let Decoded::Value(v) = item else { continue };
        let Ok(req) = parse_request(v) else { continue };
        if LEFT_OUT.contains(&req.command.as_str()) {
            return true;
        }
        if req.command == "human-monitor-command"
            && req
                .arguments
                .get("command-line")
                .and_then(|c| c.as_str())
                .is_some_and(|c| c.contains("screendump"))
        {
            return true;
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    if leaves_out(data) {
        return;
    }
    let socket = vm_socket();
    let mut s = UnixStream::connect(socket).expect("the fuzz VM stopped listening");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").unwrap();
    // The server may close early on a framing error: a failed write is an answer too.
    let _ = s.write_all(data);
    let _ = s.write_all(b"\n{\"execute\":\"query-status\",\"id\":\"fuzz-end\"}\n");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        panic!("no answer from the fuzz VM: {e}");
    }
    assert!(
        out.starts_with(b"{\"QMP\""),
        "no greeting: {}",
        String::from_utf8_lossy(&out)
    );
});
