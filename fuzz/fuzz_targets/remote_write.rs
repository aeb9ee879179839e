#![no_main]
//! Snappy + protobuf remote_write 1.0 bodies, as `/api/v1/write` receives them: the prost
//! decoder and the borrowing one the collector uses, on the same bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = osprey_protocol::prompb::decode_write_request(data, 1 << 20);
    let _ = osprey_protocol::remote_write::decode_v1(data);
    if let Ok(raw) = osprey_protocol::snappy::decompress(data, 1 << 20) {
        if let Ok(view) = osprey_protocol::remote_write::decode_v1(&raw) {
            for s in &view.series {
                let _ = view.labels_of(s);
            }
        }
    }
});
