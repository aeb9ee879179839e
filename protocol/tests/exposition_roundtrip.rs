//! Property: whatever prometheus-client (the reference Rust encoder) writes, in OpenMetrics 1.0
//! or in text 0.0.4, our parser reads back exactly: names, label values with any characters
//! (quotes, backslashes, newlines, unicode), values bit for bit, HELP text and types. And no
//! input at all makes the parser panic.

use osprey_protocol::exposition::{Entry, Format, MetricKind, Parser};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
struct FamilySpec {
    name: String,
    help: String,
    counter: bool,
    series: Vec<(Labels, f64)>,
}

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,12}"
}

fn family() -> impl Strategy<Value = FamilySpec> {
    (
        "[a-z][a-z0-9_]{0,20}[a-z0-9]",
        // prometheus-client writes HELP unescaped (so no '\\' or newline here) and appends '.'.
        "[ -\\[\\]-~é☃]{0,40}",
        any::<bool>(),
        prop::collection::vec(
            (
                prop::collection::btree_map(label_name(), "[ -~\\\\\n\"é☃{},=]{0,20}", 0..4),
                prop_oneof![any::<f64>().prop_filter("finite", |v| v.is_finite()), 0.0..1e6, Just(0.0)],
            ),
            1..5,
        ),
    )
        .prop_map(|(name, help, counter, series)| {
            // Counters are monotonic and non-negative; the encoder relies on it.
            let series = series
                .into_iter()
                .map(|(l, v)| (l.into_iter().collect::<Labels>(), if counter { v.abs() } else { v }))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect();
            FamilySpec { name: format!("m{name}"), help, counter, series }
        })
}

fn registry(families: &[FamilySpec]) -> Registry {
    let mut r = Registry::default();
    for f in families {
        if f.counter {
            let fam = Family::<Labels, Counter<f64, AtomicU64>>::default();
            for (l, v) in &f.series {
                fam.get_or_create(l).inc_by(*v);
            }
            r.register(&f.name, &f.help, fam);
        } else {
            let fam = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            for (l, v) in &f.series {
                fam.get_or_create(l).set(*v);
            }
            r.register(&f.name, &f.help, fam);
        }
    }
    r
}

fn check(families: &[FamilySpec], body: &str, format: Format) -> Result<(), TestCaseError> {
    let mut samples: BTreeMap<(String, Labels), f64> = BTreeMap::new();
    let mut helps = BTreeMap::new();
    let mut types = BTreeMap::new();
    for e in Parser::new(body.as_bytes(), format) {
        match e.map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))? {
            Entry::Sample(s) => {
                let mut labels: Labels = s.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
                labels.sort();
                samples.insert((s.name.to_string(), labels), s.value);
            }
            Entry::Help { name, help } => {
                helps.insert(name.to_string(), help.into_owned());
            }
            Entry::Type { name, kind } => {
                types.insert(name.to_string(), kind);
            }
            Entry::Unit { .. } => {}
        }
    }
    let mut expected = 0;
    for f in families {
        // Blanks between the name and the text are separators, as in Prometheus' parser.
        let help = format!("{}.", f.help).trim_start_matches([' ', '\t']).to_string();
        // In 0.0.4 a counter family is named like its samples, `_total` included.
        let family = if f.counter && format == Format::Text { format!("{}_total", f.name) } else { f.name.clone() };
        prop_assert_eq!(helps.get(&family), Some(&help), "help of {}", family);
        let kind = if f.counter { MetricKind::Counter } else { MetricKind::Gauge };
        prop_assert_eq!(types.get(&family), Some(&kind));
        let sample_name = if f.counter { format!("{}_total", f.name) } else { f.name.clone() };
        for (labels, v) in &f.series {
            let mut l = labels.clone();
            l.sort();
            let got = samples.get(&(sample_name.clone(), l.clone()));
            prop_assert!(got.is_some(), "missing {sample_name}{l:?} in\n{body}");
            prop_assert_eq!(got.map(|g| g.to_bits()), Some(v.to_bits()), "value of {}{:?}", sample_name, l);
            expected += 1;
        }
    }
    prop_assert_eq!(samples.len(), expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn openmetrics_from_prometheus_client_round_trips(families in prop::collection::vec(family(), 1..5)) {
        let mut names = std::collections::HashSet::new();
        let families: Vec<_> = families.into_iter().filter(|f| names.insert(f.name.clone())).collect();
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry(&families)).unwrap();
        check(&families, &body, Format::OpenMetrics)?;
    }

    #[test]
    fn text_004_from_prometheus_client_round_trips(families in prop::collection::vec(family(), 1..5)) {
        let mut names = std::collections::HashSet::new();
        let families: Vec<_> = families.into_iter().filter(|f| names.insert(f.name.clone())).collect();
        let mut body = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut body, &registry(&families)).unwrap();
        check(&families, &body, Format::Text)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), om in any::<bool>()) {
        let format = if om { Format::OpenMetrics } else { Format::Text };
        for e in Parser::new(&body, format) {
            if let Ok(Entry::Sample(s)) = e {
                let _ = s.labels().count();
            }
        }
    }

    #[test]
    fn mutated_valid_bodies_never_panic(pos in 0usize..400, byte in any::<u8>()) {
        let mut body = b"# HELP a h\\n\n# TYPE a counter\na_total{x=\"1\\\\\",y=\"\\\"\"} 1 # {t=\"2\"} 3 4\nb{c=\"d\"} -Inf 17\n# EOF\n".to_vec();
        let p = pos % body.len();
        body[p] = byte;
        for format in [Format::Text, Format::OpenMetrics] {
            for e in Parser::new(&body, format) {
                if let Ok(Entry::Sample(s)) = e {
                    let _ = s.labels().count();
                }
            }
        }
    }
}
