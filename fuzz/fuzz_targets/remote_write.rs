#![no_main]
//! Snappy + protobuf remote_write bodies, as `/api/v1/write` receives them.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = osprey_protocol::prompb::decode_write_request(data, 1 << 20);
});
