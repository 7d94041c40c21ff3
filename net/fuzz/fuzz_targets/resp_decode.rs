//! Feeds arbitrary bytes to the RESP command parser as a connection loop
//! does; it must never panic or loop without consuming input.
#![no_main]

use corekv_net::resp::parse_command;
use corekv_net::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut at = 0;
    while at < data.len() {
        match parse_command(&data[at..], &limits) {
            Ok(Some((_, used))) => {
                assert!(used > 0, "parser consumed nothing");
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
