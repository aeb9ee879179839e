#![no_main]
//! Snappy + protobuf Loki push bodies, as `/loki/api/v1/push` receives them.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = osprey_protocol::logproto::decode_push_request(data, 1 << 20);
});
