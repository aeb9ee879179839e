//! The log store's on-disk decoders never panic on arbitrary bytes: a block (as read back from
//! a part file after its CRC passed, or corrupted in ways the CRC misses), a WAL push record,
//! and a line-hint probe built from arbitrary query text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use osprey_collector::logs::block::{DecodedBlock, SearchPlan};
use osprey_collector::logs::filter::{FilterBuilder, Probe};

fuzz_target!(|data: &[u8]| {
    // Raw bytes as a compressed block, and as the content of one (compressed here).
    let _ = DecodedBlock::decode(data, 1 << 20);
    let _ = DecodedBlock::decode_timestamps(data, 1 << 20);
    let hints = [data.get(..data.len().min(9)).unwrap_or_default().to_vec()];
    let _ = DecodedBlock::decode_matching(data, 1 << 20, i64::MIN, i64::MAX, &SearchPlan::new(&hints));
    // Arbitrary bytes as the three columns of a skeleton block (valid frames, bad content).
    let (a, rest) = data.split_at(data.len() / 2);
    let (s, l) = rest.split_at(rest.len() / 2);
    if let (Ok(za), Ok(zs), Ok(zl)) = (zstd::bulk::compress(a, 1), zstd::bulk::compress(s, 1), zstd::bulk::compress(l, 1)) {
        let mut block = vec![1u8];
        for n in [a.len(), s.len(), l.len(), za.len(), zs.len()] {
            let mut n = n as u64;
            while n >= 0x80 {
                block.push(n as u8 | 0x80);
                n >>= 7;
            }
            block.push(n as u8);
        }
        block.extend_from_slice(&za);
        block.extend_from_slice(&zs);
        block.extend_from_slice(&zl);
        if let Ok(b) = DecodedBlock::decode(&block, data.len()) {
            for i in 0..b.len() {
                let _ = b.entry(i);
            }
        }
        if let Ok((b, lines)) = DecodedBlock::decode_matching(&block, data.len(), i64::MIN, i64::MAX, &SearchPlan::new(&hints)) {
            for i in lines {
                let _ = b.entry(i as usize);
            }
        }
    }
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
