//! The log store's on-disk decoders never panic on arbitrary bytes: a block (as read back from
//! a part file after its CRC passed, or corrupted in ways the CRC misses), a WAL push record,
//! and a line-hint probe built from arbitrary query text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use osprey_collector::logs::block::DecodedBlock;
use osprey_collector::logs::filter::{FilterBuilder, Probe};

fuzz_target!(|data: &[u8]| {
    // Raw bytes as a compressed block, and as the content of one (compressed here).
    let _ = DecodedBlock::decode(data, 1 << 20);
    if let Ok(z) = zstd::bulk::compress(data, 1) {
        if let Ok(b) = DecodedBlock::decode(&z, data.len()) {
            for i in 0..b.len() {
                let _ = b.entry(i);
            }
        }
    }
    let _ = osprey_collector::logs::record::decode(data);
    // Filters: whatever the bytes, a literal taken from a line always passes its block.
    let mut f = FilterBuilder::default();
    f.add_line(data);
    let filter = f.finish();
    let cut = data.len() / 2;
    assert!(filter.may_contain_all(&[Probe::new(&data[cut / 2..cut])]));
});
