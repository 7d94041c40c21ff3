//! Feeds arbitrary bytes to the native request and response decoders, the
//! way a connection loop does (decode, consume, repeat), and re-encodes
//! whatever decodes: decoding must never panic, and what it produces must
//! round-trip.
#![no_main]

use corekv_net::native::{decode_request, decode_response, encode_request, encode_response};
use corekv_net::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame_bytes: 1 << 16,
        ..Limits::default()
    };
    let mut at = 0;
    while at < data.len() {
        match decode_request(&data[at..], &limits) {
            Ok(Some((req, used))) => {
                let mut out = Vec::new();
                encode_request(&req, &mut out);
                assert_eq!(out, data[at..at + used]);
                at += used;
            }
            Ok(None) => break,
            Err(e) => match e.skip {
                Some(n) if n > 0 => at += n,
                _ => break,
            },
        }
    }
    if let Ok(Some((resp, _))) = decode_response(data, &limits) {
        let mut out = Vec::new();
        encode_response(&resp, &mut out);
        let (again, _) = decode_response(&out, &limits).expect("re-encoded").expect("complete");
        assert_eq!(again, resp);
    }
});
