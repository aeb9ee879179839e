//! Background work of the log store: loading parts at startup, flushing the head into parts
//! (then truncating the WAL), merging small parts, and retention.
//!
//! Every change to the set of live parts follows the same order, so a crash at any point leaves
//! a consistent store: write the new part files (fsync, rename, fsync dir) → replace the
//! manifest atomically → swap the in-memory snapshot → delete what is no longer named (input
//! parts, expired parts, flushed WAL segments). Files the manifest does not name are garbage and
//! are deleted at the next start; WAL segments below the manifest's `wal_through` likewise.

use super::head::Head;
use super::index::TenantIndex;
use super::limits;
use super::manifest::Manifest;
use super::metrics::{LogMetrics, ReasonLabels};
use super::part::{Part, PartWriter, day_of, part_path};
use super::store::{Inner, LivePart, State, StoreError};
use osprey_protocol::loki_labels;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Live parts and the stream index built from them.
pub type LoadedParts = (Vec<Arc<LivePart>>, HashMap<String, TenantIndex>);

/// Opens every part the manifest names, deletes files it does not name, and builds the stream
/// index. A part that cannot be read is moved to `parts/corrupt/` and dropped from the manifest
/// (logged): the collector still starts.
pub fn load_parts(dir: &Path, manifest: &mut Manifest, metrics: &LogMetrics) -> std::io::Result<LoadedParts> {
    let mut max_id = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let id = name.strip_suffix(".part").and_then(|s| s.parse::<u64>().ok());
        let garbage = match id {
            Some(id) => {
                max_id = max_id.max(id);
                !manifest.parts.contains(&id)
            }
            None => name.ends_with(".part.tmp"),
        };
        if garbage {
            tracing::info!(file = %entry.path().display(), "deleting a part file left by an interrupted flush or merge");
            std::fs::remove_file(entry.path())?;
        }
    }
    manifest.next_part_id = manifest.next_part_id.max(max_id + 1);
    let mut index: HashMap<String, TenantIndex> = HashMap::new();
    let mut parts = Vec::new();
    let mut dropped = Vec::new();
    for &id in &manifest.parts {
        let part = match Part::open(dir, id) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "log part unreadable; moving it to parts/corrupt and continuing without it");
                let aside = dir.join("corrupt");
                std::fs::create_dir_all(&aside)?;
                let _ = std::fs::rename(part_path(dir, id), aside.join(format!("{id:016}.part")));
                metrics.maintenance_errors.inc();
                dropped.push(id);
                continue;
            }
        };
        let t = index.entry(part.meta.tenant.clone()).or_default();
        let stream_ids = intern_streams(t, &part);
        parts.push(Arc::new(LivePart { part, stream_ids }));
    }
    if !dropped.is_empty() {
        manifest.parts.retain(|id| !dropped.contains(id));
        if let Some(logs_dir) = dir.parent() {
            manifest.store(logs_dir)?;
        }
    }
    Ok((parts, index))
}

fn intern_streams(t: &mut TenantIndex, part: &Part) -> Vec<u32> {
    let mut ids: Vec<u32> = part
        .meta
        .streams
        .iter()
        .map(|canonical| match t.get(canonical) {
            Some(id) => id,
            None => t.intern(canonical, &loki_labels::parse(canonical).unwrap_or_default()),
        })
        .collect();
    for b in &part.meta.blocks {
        if let Some(&id) = ids.get(b.stream as usize) {
            let s = &mut t.streams[id as usize];
            s.max_ts = s.max_ts.max(b.max_ts);
        }
    }
    ids.shrink_to_fit();
    ids
}

/// `(id, bytes)` of every WAL segment file in `dir`, by id.
pub fn wal_segment_sizes(dir: &Path) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) {
            out.push((id, entry.metadata()?.len()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Deletes WAL segment files with an id below `through`.
pub fn remove_wal_before(dir: &Path, through: u64) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok())
            && id < through
        {
            std::fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    if n > 0 {
        crate::wal::sync_dir(dir)?;
    }
    Ok(n)
}

pub(crate) fn publish_part_metrics(inner: &Inner) {
    let state = inner.snapshot();
    inner.metrics.parts.set(state.parts.len() as u64);
    inner.metrics.part_bytes.set(state.parts.iter().map(|p| p.part.file_bytes).sum());
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The flusher thread: flushes when the head is full or old enough, or when woken.
pub(crate) fn flusher(inner: Arc<Inner>) {
    loop {
        {
            let (m, cv) = &inner.wake;
            let mut woken = lock(m);
            if !*woken {
                woken = match cv.wait_timeout(woken, Duration::from_millis(500)) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
            *woken = false;
        }
        if inner.stop.load(Ordering::SeqCst) {
            break;
        }
        let state = inner.snapshot();
        let cfg = inner.cfg.load();
        let interval = cfg.flush_interval.get();
        let due = {
            let head = match state.active.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            !head.is_empty()
                && (head.bytes >= cfg.head_max_bytes || head.since.is_some_and(|s| s.elapsed() >= interval))
        };
        if (due || !state.frozen.is_empty())
            && let Err(e) = flush(&inner)
        {
            inner.metrics.maintenance_errors.inc();
            tracing::error!(error = %e, "log flush failed; the lines stay in the WAL and the head, will retry");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// The merger thread: retention, then merges, every `maintenance_interval`.
pub(crate) fn merger(inner: Arc<Inner>) {
    let mut last = std::time::Instant::now();
    while !inner.stop.load(Ordering::SeqCst) {
        // Read each round: a reload may change it.
        let interval = inner.cfg.load().maintenance_interval.get();
        std::thread::sleep(Duration::from_millis(200).min(interval));
        if last.elapsed() < interval {
            continue;
        }
        last = std::time::Instant::now();
        expire_idle_streams(&inner);
        if let Err(e) = retention(&inner) {
            inner.metrics.maintenance_errors.inc();
            tracing::error!(error = %e, "log retention pass failed; will retry");
        }
        loop {
            if inner.stop.load(Ordering::SeqCst) {
                break;
            }
            match merge_once(&inner) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    inner.metrics.maintenance_errors.inc();
                    tracing::error!(error = %e, "log merge failed; will retry");
                    break;
                }
            }
        }
    }
}

fn expire_idle_streams(inner: &Inner) {
    let now = inner.now_secs();
    let mut index = match inner.index.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let cfg = inner.cfg.load();
    for t in index.values_mut() {
        limits::expire_idle(&cfg, t, now);
    }
}

/// Flushes every frozen head (oldest first), freezing the active head first if it holds lines.
pub(crate) fn flush(inner: &Inner) -> Result<(), StoreError> {
    let _serial = lock(&inner.flush_lock);
    let state = inner.snapshot();
    let active_empty = state.active.read().map(|h| h.is_empty()).unwrap_or(false);
    if !active_empty {
        // No push is between its WAL append and its head insert while we hold the gate, so
        // every line of the old head is in a segment below `seg` and none of the new head's is.
        let _gate = inner.gate.blocking_write();
        let seg = inner.wal.roll_blocking()?;
        inner.set_state(|s| {
            let mut frozen = s.frozen.clone();
            frozen.push((s.active.clone(), seg));
            if let Ok(h) = s.active.read() {
                inner.frozen_lines.fetch_add(h.entries as u64, Ordering::Relaxed);
                inner.frozen_bytes.fetch_add(h.bytes as u64, Ordering::Relaxed);
            }
            State { active: Arc::new(RwLock::new(Head::default())), frozen, parts: s.parts.clone() }
        });
        inner.metrics.head_bytes.set(inner.frozen_bytes.load(Ordering::Relaxed));
        inner.metrics.head_lines.set(inner.frozen_lines.load(Ordering::Relaxed));
    }
    loop {
        let state = inner.snapshot();
        let Some((head, seg)) = state.frozen.first().cloned() else { break };
        flush_head(inner, &head, seg)?;
    }
    Ok(())
}

/// Writes one frozen head into parts, commits them in the manifest with the WAL checkpoint,
/// makes them visible in place of the head, and deletes the WAL segments they cover.
fn flush_head(inner: &Inner, head_lock: &Arc<RwLock<Head>>, seg: u64) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let head = match head_lock.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let mut written: Vec<(u64, PartWriter)> = Vec::new();
    let mut new_parts = Vec::new();
    let cfg = inner.cfg.load();
    let mut tenants: Vec<&String> = head.tenants.keys().collect();
    tenants.sort();
    let result = (|| -> Result<(), StoreError> {
        for tenant in tenants {
            let streams = &head.tenants[tenant];
            let mut ordered: Vec<(std::sync::Arc<str>, u32)> = {
                let index = match inner.index.read() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                let Some(t) = index.get(tenant) else { continue };
                streams.keys().map(|&id| (t.streams[id as usize].canonical.clone(), id)).collect()
            };
            ordered.sort();
            let mut writers: BTreeMap<i64, (u64, PartWriter, Option<u32>)> = BTreeMap::new();
            for (canonical, id) in &ordered {
                let sh = &streams[id];
                for i in sh.sorted_order() {
                    let i = i as usize;
                    let ts = sh.ts[i];
                    let day = day_of(ts);
                    if let std::collections::btree_map::Entry::Vacant(slot) = writers.entry(day) {
                        let pid = inner.next_part_id.fetch_add(1, Ordering::SeqCst);
                        let w = PartWriter::create(
                            &inner.parts_dir,
                            pid,
                            tenant,
                            day,
                            cfg.flush_zstd_level,
                            cfg.block_bytes,
                        )?;
                        slot.insert((pid, w, None));
                    }
                    let Some((_, w, current)) = writers.get_mut(&day) else { continue };
                    if *current != Some(*id) {
                        w.stream(canonical)?;
                        *current = Some(*id);
                    }
                    w.push(ts, sh.line(i), &sh.metadata(i))?;
                }
            }
            for (_, (pid, w, _)) in writers {
                written.push((pid, w));
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (_, w) in written {
            w.abandon();
        }
        return Err(e);
    }
    let mut lines = 0;
    for (pid, w) in written {
        lines += w.entries();
        w.finish()?;
        let part = Part::open(&inner.parts_dir, pid)?;
        let stream_ids = {
            let mut index = match inner.index.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            intern_streams(index.entry(part.meta.tenant.clone()).or_default(), &part)
        };
        new_parts.push(Arc::new(LivePart { part, stream_ids }));
    }
    let (head_lines, head_bytes) = (head.entries as u64, head.bytes as u64);
    drop(head);
    {
        let mut m = lock(&inner.manifest);
        let mut next = m.clone();
        next.parts.extend(new_parts.iter().map(|p| p.part.id));
        next.wal_through = next.wal_through.max(seg);
        next.next_part_id = inner.next_part_id.load(Ordering::SeqCst);
        next.store(&inner.logs_dir)?;
        *m = next;
        inner.set_state(|s| State {
            active: s.active.clone(),
            frozen: s.frozen.iter().filter(|(h, _)| !Arc::ptr_eq(h, head_lock)).cloned().collect(),
            parts: s.parts.iter().cloned().chain(new_parts.iter().cloned()).collect(),
        });
    }
    inner.frozen_lines.fetch_sub(head_lines, Ordering::Relaxed);
    inner.frozen_bytes.fetch_sub(head_bytes, Ordering::Relaxed);
    let (active_lines, active_bytes) =
        inner.snapshot().active.read().map(|h| (h.entries as u64, h.bytes as u64)).unwrap_or((0, 0));
    inner.metrics.head_lines.set(active_lines + inner.frozen_lines.load(Ordering::Relaxed));
    inner.metrics.head_bytes.set(active_bytes + inner.frozen_bytes.load(Ordering::Relaxed));
    let removed = inner.wal.segments().iter().filter(|s| s.id < seg).count();
    inner.wal.remove_before(seg)?;
    inner.metrics.wal_removed_segments.inc_by(removed as u64);
    inner.metrics.flushes.inc();
    inner.metrics.flushed_lines.inc_by(lines);
    publish_part_metrics(inner);
    tracing::debug!(
        parts = new_parts.len(),
        lines,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "flushed the head into parts"
    );
    Ok(())
}

/// Applies retention by age and by size to every tenant's parts; deletes whole files.
pub(crate) fn retention(inner: &Inner) -> Result<(), StoreError> {
    let state = inner.snapshot();
    let cfg = inner.cfg.load();
    let now_ns = crate::time::now_ns();
    let mut doomed: Vec<(u64, &'static str, u64)> = Vec::new();
    let mut by_tenant: BTreeMap<&str, Vec<&Arc<LivePart>>> = BTreeMap::new();
    for p in &state.parts {
        by_tenant.entry(p.part.meta.tenant.as_str()).or_default().push(p);
    }
    for (tenant, mut parts) in by_tenant {
        let (period, max_bytes) = cfg.retention.for_tenant(tenant);
        if let Some(period) = period {
            let cutoff = now_ns.saturating_sub(i64::try_from(period.as_nanos()).unwrap_or(i64::MAX));
            parts.retain(|p| {
                let expired = p.part.meta.max_ts < cutoff;
                if expired {
                    doomed.push((p.part.id, "age", p.part.file_bytes));
                }
                !expired
            });
        }
        if max_bytes > 0 {
            parts.sort_by_key(|p| (p.part.meta.max_ts, p.part.id));
            let mut total: u64 = parts.iter().map(|p| p.part.file_bytes).sum();
            for p in parts {
                if total <= max_bytes {
                    break;
                }
                total -= p.part.file_bytes;
                doomed.push((p.part.id, "size", p.part.file_bytes));
            }
        }
    }
    if doomed.is_empty() {
        return Ok(());
    }
    replace_parts(inner, &doomed.iter().map(|d| d.0).collect::<Vec<_>>(), None)?;
    for (id, reason, bytes) in &doomed {
        inner.metrics.retention_deleted_parts.get_or_create(&ReasonLabels { reason }).inc();
        inner.metrics.retention_deleted_bytes.get_or_create(&ReasonLabels { reason }).inc_by(*bytes);
        tracing::info!(part = id, reason, bytes, "retention deleted a log part");
    }
    Ok(())
}

/// Commits "remove `gone`, add `added`" to the manifest and the snapshot, then deletes the
/// removed files.
fn replace_parts(inner: &Inner, gone: &[u64], added: Option<Arc<LivePart>>) -> Result<(), StoreError> {
    {
        let mut m = lock(&inner.manifest);
        let mut next = m.clone();
        next.parts.retain(|id| !gone.contains(id));
        if let Some(p) = &added {
            next.parts.push(p.part.id);
        }
        next.next_part_id = inner.next_part_id.load(Ordering::SeqCst);
        next.store(&inner.logs_dir)?;
        *m = next;
        inner.set_state(|s| State {
            active: s.active.clone(),
            frozen: s.frozen.clone(),
            parts: s.parts.iter().filter(|p| !gone.contains(&p.part.id)).cloned().chain(added.clone()).collect(),
        });
    }
    // Scans holding the old snapshot keep their open file handles; unlinking is safe.
    for id in gone {
        match std::fs::remove_file(part_path(&inner.parts_dir, *id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    publish_part_metrics(inner);
    Ok(())
}

/// Picks the parts to merge: within one tenant and day, the smallest parts, at most
/// `merge_max_parts` and `merge_max_part_bytes` in total, when there are `merge_min_parts`.
fn pick_merge(inner: &Inner, state: &State) -> Option<Vec<Arc<LivePart>>> {
    let cfg = inner.cfg.load();
    let mut groups: BTreeMap<(&str, i64), Vec<&Arc<LivePart>>> = BTreeMap::new();
    for p in &state.parts {
        groups.entry((p.part.meta.tenant.as_str(), p.part.meta.day)).or_default().push(p);
    }
    for (_, mut parts) in groups {
        if parts.len() < cfg.merge_min_parts {
            continue;
        }
        parts.sort_by_key(|p| (p.part.file_bytes, p.part.id));
        let mut picked = Vec::new();
        let mut total = 0;
        for p in parts {
            if picked.len() >= cfg.merge_max_parts || total + p.part.file_bytes > cfg.merge_max_part_bytes {
                break;
            }
            total += p.part.file_bytes;
            picked.push(p.clone());
        }
        if picked.len() >= cfg.merge_min_parts {
            picked.sort_by_key(|p| p.part.id);
            return Some(picked);
        }
    }
    None
}

/// Merges one group of parts, if any qualifies. Returns whether it merged.
pub(crate) fn merge_once(inner: &Inner) -> Result<bool, StoreError> {
    let state = inner.snapshot();
    let Some(inputs) = pick_merge(inner, &state) else { return Ok(false) };
    drop(state);
    let started = std::time::Instant::now();
    let first = &inputs[0].part.meta;
    let (tenant, day) = (first.tenant.clone(), first.day);
    let pid = inner.next_part_id.fetch_add(1, Ordering::SeqCst);
    let cfg = inner.cfg.load();
    let mut w = PartWriter::create(&inner.parts_dir, pid, &tenant, day, cfg.merge_zstd_level, cfg.merge_block_bytes)?;
    // Streams in label order, each with its blocks per input (already time-ordered).
    let mut streams: BTreeMap<&str, Vec<(usize, Vec<usize>)>> = BTreeMap::new();
    for (pi, lp) in inputs.iter().enumerate() {
        let m = &lp.part.meta;
        let mut per_stream: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (bi, b) in m.blocks.iter().enumerate() {
            per_stream.entry(b.stream).or_default().push(bi);
        }
        for (s, blocks) in per_stream {
            streams.entry(m.streams[s as usize].as_str()).or_default().push((pi, blocks));
        }
    }
    let inputs_ref = &inputs;
    let block_len = move |sources: &[(usize, Vec<usize>)]| -> u64 {
        let mut n = 0u64;
        for (pi, blocks) in sources {
            for &bi in blocks {
                n += u64::from(inputs_ref[*pi].part.meta.blocks[bi].len);
            }
        }
        n
    };
    let total: u64 = streams.values().map(|s| block_len(s)).sum();
    let mut progress = crate::progress::ProgressLog::new("merging log parts");
    let result = (|| -> Result<(), StoreError> {
        let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); inputs.len()];
        let mut done = 0u64;
        for (canonical, sources) in &streams {
            if inner.stop.load(Ordering::SeqCst) {
                return Err(StoreError::Io(std::io::Error::other("shutting down")));
            }
            w.stream(canonical)?;
            merge_stream(&inputs, sources, &mut bufs, &mut w)?;
            done += block_len(sources);
            progress.update(done, total);
        }
        Ok(())
    })();
    if let Err(e) = result {
        w.abandon();
        if inner.stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        return Err(e);
    }
    let (_, size) = w.finish()?;
    let part = Part::open(&inner.parts_dir, pid)?;
    let stream_ids = {
        let mut index = match inner.index.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        intern_streams(index.entry(tenant.clone()).or_default(), &part)
    };
    let in_bytes: u64 = inputs.iter().map(|p| p.part.file_bytes).sum();
    let gone: Vec<u64> = inputs.iter().map(|p| p.part.id).collect();
    replace_parts(inner, &gone, Some(Arc::new(LivePart { part, stream_ids })))?;
    inner.metrics.merges.inc();
    inner.metrics.merged_bytes.inc_by(in_bytes);
    tracing::info!(
        tenant = %tenant,
        inputs = gone.len(),
        in_bytes,
        out_bytes = size,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "merged log parts"
    );
    Ok(true)
}

/// K-way merge of one stream's blocks from several parts, holding one decoded block per input.
fn merge_stream(
    inputs: &[Arc<LivePart>],
    sources: &[(usize, Vec<usize>)],
    bufs: &mut [Vec<u8>],
    w: &mut PartWriter,
) -> Result<(), StoreError> {
    struct Cursor {
        part: usize,
        blocks: Vec<usize>,
        next_block: usize,
        block: Option<super::block::DecodedBlock>,
        pos: usize,
    }
    let mut cursors: Vec<Cursor> = sources
        .iter()
        .map(|(p, b)| Cursor { part: *p, blocks: b.clone(), next_block: 0, block: None, pos: 0 })
        .collect();
    let advance = |c: &mut Cursor, bufs: &mut [Vec<u8>]| -> Result<Option<i64>, StoreError> {
        loop {
            if let Some(b) = &c.block
                && c.pos < b.len()
            {
                return Ok(Some(b.ts(c.pos)));
            }
            let Some(&bi) = c.blocks.get(c.next_block) else {
                c.block = None;
                return Ok(None);
            };
            c.next_block += 1;
            c.block = Some(inputs[c.part].part.read_block(bi, &mut bufs[c.part])?);
            c.pos = 0;
        }
    };
    // Min-heap on (ts, cursor index): ties go to the older part (inputs are sorted by id).
    let mut heap = BinaryHeap::new();
    for (ci, c) in cursors.iter_mut().enumerate() {
        if let Some(ts) = advance(c, bufs)? {
            heap.push(std::cmp::Reverse((ts, ci)));
        }
    }
    while let Some(std::cmp::Reverse((_, ci))) = heap.pop() {
        let c = &mut cursors[ci];
        if let Some(b) = &c.block {
            let e = b.entry(c.pos);
            w.push(e.ts_ns, e.line, &e.metadata)?;
        }
        c.pos += 1;
        if let Some(ts) = advance(c, bufs)? {
            heap.push(std::cmp::Reverse((ts, ci)));
        }
    }
    Ok(())
}
