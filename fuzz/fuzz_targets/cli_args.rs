//! QEMU command lines: the input is argv (without argv[0]) with NUL between arguments, as the
//! bytes Linux hands a process (not necessarily UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

fuzz_target!(|data: &[u8]| {
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .take(256)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let _ = rvmm_cli::parse_args(args);
});
