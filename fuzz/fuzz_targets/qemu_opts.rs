//! QemuOpts (`key=value,...` with `,,` escapes and an implied first key), then every typed
//! getter on every key it produced.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_cli::opts::{parse_bool, parse_number};
use rvmm_cli::size::{format_size, parse_size};
use rvmm_cli::QemuOpts;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

const IMPLIED: [Option<&str>; 4] = [None, Some("type"), Some("file"), Some("path")];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let implied = IMPLIED[usize::from(sel) % IMPLIED.len()];
    let Ok(opts) = QemuOpts::parse_os(OsStr::from_bytes(text), implied) else {
        return;
    };
    let _ = opts.check_text(&["file", "path"]);
    let _ = opts.wants_help();
    let _ = opts.check_known(&["type", "file", "id", "size"]);
    let _ = opts.check_unsupported(&["bad"]);
    let keys: Vec<String> = opts.params().iter().map(|(k, _)| k.clone()).collect();
    for key in &keys {
        let _ = opts.get(key);
        let _ = opts.get_path(key);
        let _ = opts.get_bool(key);
        let _ = opts.get_u64(key);
        let _ = opts.get_u32(key);
        let _ = opts.get_u16(key);
        let _ = opts.get_number_max(key, u64::from(sel));
        for unit in [1, 512, 1 << 20] {
            let _ = opts.get_size(key, unit);
        }
        if let Some(v) = opts.get(key) {
            let _ = parse_bool(key, v);
            let _ = parse_number(key, v);
            if let Ok(n) = parse_size(v, 1 << 20) {
                let _ = format_size(n);
            }
        }
    }
});
