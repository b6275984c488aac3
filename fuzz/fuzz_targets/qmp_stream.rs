//! The QMP socket's byte stream: JSON framing (values split across reads, garbage, oversized
//! requests, recovery at the next newline) and the request shape check, with the replies
//! encoded as they would be sent.
//!
//! Input: a byte giving the read size (1-256), then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_vmm::qmp::protocol::{encode, error_reply, parse_request, reply, Decoded, Decoder};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::default();
    for piece in stream.chunks(usize::from(chunk) + 1) {
        decoder.push(piece);
        while let Some(item) = decoder.next_item() {
            let out = match item {
                Decoded::Value(v) => match parse_request(v) {
                    Ok(req) => reply(serde_json::Value::String(req.command), req.id),
                    Err((id, err)) => error_reply(&err, id),
                },
                Decoded::Error(desc) => {
                    error_reply(&rvmm_vmm::qmp::protocol::QmpError::generic(desc), None)
                }
            };
            let _ = encode(&out);
        }
    }
});
