//! `/federate`: the latest sample of every matching series, as Prometheus text 0.0.4 or
//! OpenMetrics 1.0.
//!
//! Rendering a million series must not stop ingest for its whole duration, so each shard is
//! rendered under its own read lock into its own buffer, with the lines of each metric family
//! written contiguously; the families are then stitched together in name order without any
//! lock, the output being a list of slices of those buffers (no second copy). Families are
//! `untyped` (`unknown` in OpenMetrics), as Prometheus' own federation serves them, with a
//! `# HELP` line when the family's metadata is known (so `promtool check metrics` is content).
//! Series within a family come in no particular order, which both formats allow.

use super::shard::Shard;
use super::{MetricsStore, lock, read};
use crate::selector::Selector;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: integer millisecond timestamps.
    Text,
    /// `application/openmetrics-text; version=1.0.0`: float second timestamps, `# EOF`.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => osprey_protocol::exposition::TEXT_CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Negotiates from an `Accept` header the way Prometheus' scraper offers formats:
    /// OpenMetrics when it is acceptable with a higher or equal quality than text.
    pub fn from_accept(accept: &str) -> Format {
        let mut om = None::<f32>;
        let mut text = None::<f32>;
        for part in accept.split(',') {
            let mut params = part.split(';');
            let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in params {
                if let Some((k, v)) = p.split_once('=')
                    && k.trim() == "q"
                {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => om = Some(om.map_or(q, |o| o.max(q))),
                "text/plain" | "*/*" | "text/*" => text = Some(text.map_or(q, |t| t.max(q))),
                _ => {}
            }
        }
        match (om, text) {
            (Some(o), t) if o > 0.0 && o >= t.unwrap_or(0.0) => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// One shard's rendered lines: its buffer and, per family, the range of its lines.
struct Part {
    buf: Bytes,
    families: Vec<(String, Range<usize>)>,
}

/// Renders the matching series of `tenant` and returns the body as chunks (slices of the
/// per-shard buffers and the family headers), ready to stream or compress.
pub fn render(store: &MetricsStore, tenant: &str, selectors: &[Selector], format: Format) -> Vec<Bytes> {
    let mut parts: Vec<Part> = Vec::new();
    let mut help: BTreeMap<String, Option<String>> = BTreeMap::new();
    if let Some(t) = store.tenant(tenant) {
        // Shards are independent: render them on a few threads, each holding one shard's
        // read lock at a time.
        let next = AtomicUsize::new(0);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let rendered: Mutex<Vec<(usize, Part)>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(shard) = t.shards.get(i) else { break };
                        if let Some(part) = render_shard(&read(shard), selectors, format) {
                            lock(&rendered).push((i, part));
                        }
                    }
                });
            }
        });
        let mut rendered = rendered.into_inner().unwrap_or_else(PoisonError::into_inner);
        rendered.sort_unstable_by_key(|(i, _)| *i);
        parts = rendered.into_iter().map(|(_, p)| p).collect();
        for part in &parts {
            for (name, _) in &part.families {
                help.entry(name.clone()).or_insert(None);
            }
        }
        let md = lock(&t.metadata);
        for (name, h) in help.iter_mut() {
            *h = md.for_series(name).map(|m| m.help.to_string()).filter(|h| !h.is_empty());
        }
    }
    // Stitch: families in name order, each with its header and its lines from every shard.
    let mut by_family: BTreeMap<&str, Vec<(usize, Range<usize>)>> = BTreeMap::new();
    for (p, part) in parts.iter().enumerate() {
        for (name, range) in &part.families {
            by_family.entry(name.as_str()).or_default().push((p, range.clone()));
        }
    }
    let mut chunks = Vec::with_capacity(by_family.len() * 2 + 1);
    for (name, ranges) in by_family {
        let mut header = String::new();
        if let Some(Some(h)) = help.get(name) {
            write_help(&mut header, name, h, format);
        }
        header.push_str("# TYPE ");
        header.push_str(name);
        header.push_str(if format == Format::Text { " untyped\n" } else { " unknown\n" });
        chunks.push(Bytes::from(header));
        for (p, range) in ranges {
            chunks.push(parts[p].buf.slice(range));
        }
    }
    if format == Format::OpenMetrics {
        chunks.push(Bytes::from_static(b"# EOF\n"));
    }
    chunks
}

/// One shard's matching series, grouped by metric name.
fn render_shard(s: &Shard, selectors: &[Selector], format: Format) -> Option<Part> {
    let name_sym = s.symbols.lookup("__name__")?;
    let mut picked: Vec<(u32, u32)> = Vec::new();
    for id in MetricsStore::selected(s, selectors).iter() {
        if let Some(series) = s.get(id)
            && let Some(name) = s.label_value(series, name_sym)
        {
            picked.push((name, id));
        }
    }
    if picked.is_empty() {
        return None;
    }
    picked.sort_unstable();
    let mut buf = BytesMut::with_capacity(picked.len() * 96);
    let mut families = Vec::new();
    let mut i = 0;
    while i < picked.len() {
        let name_id = picked[i].0;
        let name = s.symbols.get(name_id);
        let start = buf.len();
        while i < picked.len() && picked[i].0 == name_id {
            if let Some(series) = s.get(picked[i].1) {
                let labels = series
                    .labels
                    .chunks_exact(2)
                    .filter(|p| p[0] != name_sym)
                    .map(|p| (s.symbols.get(p[0]), s.symbols.get(p[1]), s.symbols.needs_escape(p[1])));
                write_line(&mut buf, name, labels, series.value, series.timestamp_ms, format);
            }
            i += 1;
        }
        families.push((name.to_string(), start..buf.len()));
    }
    Some(Part { buf: buf.freeze(), families })
}

fn write_help(out: &mut String, name: &str, help: &str, format: Format) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('\n');
}

/// `name{labels} value timestamp\n`. `labels` (without `__name__`) come with a flag saying
/// whether the value needs escaping.
fn write_line<'a>(
    buf: &mut BytesMut,
    name: &str,
    labels: impl Iterator<Item = (&'a str, &'a str, bool)>,
    value: f64,
    timestamp_ms: i64,
    format: Format,
) {
    buf.extend_from_slice(name.as_bytes());
    let mut first = true;
    for (k, v, escape) in labels {
        buf.extend_from_slice(if first { b"{" } else { b"," });
        first = false;
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(b"=\"");
        if escape {
            write_escaped(buf, v);
        } else {
            buf.extend_from_slice(v.as_bytes());
        }
        buf.extend_from_slice(b"\"");
    }
    if !first {
        buf.extend_from_slice(b"}");
    }
    buf.extend_from_slice(b" ");
    write_value(buf, value);
    buf.extend_from_slice(b" ");
    match format {
        Format::Text => write_int(buf, timestamp_ms),
        Format::OpenMetrics => write_seconds(buf, timestamp_ms),
    }
    buf.extend_from_slice(b"\n");
}

/// Label value escaping shared by both formats: `\\`, `\"`, `\n`.
fn write_escaped(buf: &mut BytesMut, v: &str) {
    for b in v.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b => buf.extend_from_slice(&[b]),
        }
    }
}

/// Prometheus' spelling of special values; integers without a fraction; otherwise the
/// shortest text that reads back as the same float.
pub fn write_value(buf: &mut BytesMut, v: f64) {
    if v.is_nan() {
        buf.extend_from_slice(b"NaN");
    } else if v == f64::INFINITY {
        buf.extend_from_slice(b"+Inf");
    } else if v == f64::NEG_INFINITY {
        buf.extend_from_slice(b"-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
        write_int(buf, v as i64);
    } else {
        let _ = write!(WriterOf(buf), "{v}");
    }
}

/// Decimal digits of an integer, without going through `fmt` (a million of these per
/// `/federate`).
fn write_int(buf: &mut BytesMut, v: i64) {
    let mut digits = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        buf.extend_from_slice(b"-");
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Milliseconds as OpenMetrics' float seconds (`1700000000.123`).
fn write_seconds(buf: &mut BytesMut, ms: i64) {
    if ms >= 0 {
        let (s, frac) = (ms / 1000, ms % 1000);
        write_int(buf, s);
        if frac != 0 {
            buf.extend_from_slice(&[
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ]);
        }
    } else {
        let _ = write!(WriterOf(buf), "{}", ms as f64 / 1000.0);
    }
}

/// `std::io::Write` onto a `BytesMut` (which only implements it through `writer()`, by value).
struct WriterOf<'a>(&'a mut BytesMut);

impl std::io::Write for WriterOf<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_prometheus_scrapers() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(prom), Format::OpenMetrics);
        assert_eq!(Format::from_accept("text/plain;version=0.0.4"), Format::Text);
        assert_eq!(Format::from_accept(""), Format::Text);
        assert_eq!(Format::from_accept("*/*"), Format::Text);
        assert_eq!(Format::from_accept("application/openmetrics-text;q=0"), Format::Text);
    }

    #[test]
    fn renders_grouped_escaped_families_with_help() {
        use osprey_protocol::prompb::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
        use prost::Message;
        let mut registry = prometheus_client::registry::Registry::default();
        let telemetry = crate::telemetry::Telemetry::new(&mut registry);
        let store = MetricsStore::new(&Default::default(), "fake", telemetry, &mut registry);
        let series = |name: &str, v: &str, value: f64| TimeSeries {
            labels: vec![Label::new("__name__", name), Label::new("a", v)],
            samples: vec![Sample { value, timestamp: 1_700_000_000_123 }],
            exemplars: vec![],
        };
        let req = WriteRequest {
            timeseries: (0..50)
                .map(|i| series(if i % 2 == 0 { "b_total" } else { "a" }, &format!("v{i}"), f64::from(i)))
                .chain([series("a", "x\"y\\z\nw", 0.5)])
                .collect(),
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "b".into(),
                help: "Line one\nand \"two\" \\".into(),
                unit: "".into(),
            }],
        }
        .encode_to_vec();
        store.ingest("fake", &osprey_protocol::remote_write::decode_v1(&req).unwrap());
        let join = |chunks: Vec<Bytes>| chunks.iter().flat_map(|c| c.iter().copied()).collect::<Vec<u8>>();
        let text = String::from_utf8(join(render(&store, "fake", &[], Format::Text))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# TYPE a untyped", "{text}");
        assert!(lines[1..27].iter().all(|l| l.starts_with("a{a=")), "family a is contiguous: {text}");
        assert!(text.contains("a{a=\"x\\\"y\\\\z\\nw\"} 0.5 1700000000123\n"), "{text}");
        assert_eq!(lines[27], r#"# HELP b_total Line one\nand "two" \\"#, "HELP from the family b (counter)");
        assert_eq!(lines[28], "# TYPE b_total untyped");
        assert_eq!(lines.len(), 29 + 25);
        let om = String::from_utf8(join(render(&store, "fake", &[], Format::OpenMetrics))).unwrap();
        assert!(om.contains(r#"# HELP b_total Line one\nand \"two\" \\"#), "{om}");
        assert!(om.contains("# TYPE b_total unknown\nb_total{"), "{om}");
        assert!(om.contains("b_total{a=\"v0\"} 0 1700000000.123\n"), "{om}");
        assert!(om.ends_with("# EOF\n"));
        let only_a = crate::selector::parse_series_selector(r#"{a=~"v1|v2"}"#).unwrap();
        let some = String::from_utf8(join(render(&store, "fake", &[only_a], Format::Text))).unwrap();
        assert_eq!(
            some,
            "# TYPE a untyped\na{a=\"v1\"} 1 1700000000123\n# HELP b_total Line one\\nand \"two\" \\\\\n# TYPE b_total untyped\nb_total{a=\"v2\"} 2 1700000000123\n"
        );
    }

    #[test]
    fn values_and_timestamps() {
        let mut b = BytesMut::new();
        for v in [1.0, -0.0, 0.5, 1e20, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 123456789.125] {
            write_value(&mut b, v);
            b.extend_from_slice(b" ");
        }
        write_seconds(&mut b, 1_700_000_000_123);
        b.extend_from_slice(b" ");
        write_seconds(&mut b, 1_700_000_000_000);
        b.extend_from_slice(b" ");
        write_seconds(&mut b, 1_700_000_000_007);
        b.extend_from_slice(b" ");
        write_int(&mut b, i64::MIN);
        b.extend_from_slice(b" ");
        write_int(&mut b, -42);
        assert_eq!(
            &b[..],
            &b"1 -0 0.5 100000000000000000000 NaN +Inf -Inf 123456789.125 1700000000.123 1700000000 1700000000.007 -9223372036854775808 -42"[..]
        );
    }
}
