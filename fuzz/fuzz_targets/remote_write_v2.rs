#![no_main]
//! remote_write 2.0 bodies (`io.prometheus.write.v2.Request`), as `/api/v1/write` receives
//! them under the 2.0 Content-Type: the borrowing decoder on the raw protobuf and behind snappy.
use libfuzzer_sys::fuzz_target;
use osprey_protocol::remote_write::decode_v2;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = decode_v2(data) {
        // Every range the decoder hands out must be inside its label vector.
        for s in &view.series {
            let _ = view.labels_of(s);
            if let Some(m) = s.metadata {
                let _ = (view.symbol(m.help), view.symbol(m.unit));
            }
        }
    }
    if let Ok(raw) = osprey_protocol::snappy::decompress(data, 1 << 20) {
        let _ = decode_v2(&raw);
    }
});
