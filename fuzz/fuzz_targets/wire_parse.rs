//! Parses arbitrary bytes as a datagram and as the payload of every message kind; whatever
//! parses must pass its checks and re-emit to exactly the bytes it came from (the format has
//! one encoding per message). Any panic is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use naam_core::wire::{Body, Kind, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let mut out = vec![0u8; m.buffer_len()];
        assert_eq!(m.emit(&mut out), Ok(data.len()));
        assert_eq!(out, data);
    }
    for kind in Kind::ALL {
        if let Ok(body) = Body::parse(kind, data) {
            assert_eq!(body.kind(), kind);
            body.check().expect("a parsed body passes its checks");
            let mut out = vec![0u8; body.buffer_len()];
            body.emit(&mut out);
            assert_eq!(out, data);
        }
    }
});
