//! The checks a received series must pass before it is stored: the remote_write spec's rules
//! on label sets, and the configured limits. Each failure has a reason (a metric label) and a
//! message that names the series and what is wrong with it.

use osprey_protocol::loki_labels;

/// Per-series limits from `[metrics]`.
#[derive(Clone, Copy, Debug)]
pub struct LabelLimits {
    pub max_labels: usize,
    pub max_name_bytes: usize,
    pub max_value_bytes: usize,
}

/// Why a series was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidUtf8,
    BadSymbolRef,
    MissingMetricName,
    InvalidMetricName,
    InvalidLabelName,
    EmptyLabelName,
    EmptyLabelValue,
    DuplicateLabel,
    UnsortedLabels,
    TooManyLabels,
    LabelNameTooLong,
    LabelValueTooLong,
    NativeHistogram,
    MaxSeriesPerTenant,
    MaxSeries,
}

impl Reason {
    /// The `reason` label of `osprey_metrics_rejected_samples_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::BadSymbolRef => "bad_symbol_reference",
            Reason::MissingMetricName => "missing_metric_name",
            Reason::InvalidMetricName => "invalid_metric_name",
            Reason::InvalidLabelName => "invalid_label_name",
            Reason::EmptyLabelName => "empty_label_name",
            Reason::EmptyLabelValue => "empty_label_value",
            Reason::DuplicateLabel => "duplicate_label_name",
            Reason::UnsortedLabels => "unsorted_labels",
            Reason::TooManyLabels => "too_many_labels",
            Reason::LabelNameTooLong => "label_name_too_long",
            Reason::LabelValueTooLong => "label_value_too_long",
            Reason::NativeHistogram => "native_histogram",
            Reason::MaxSeriesPerTenant => "max_series_per_tenant",
            Reason::MaxSeries => "max_series",
        }
    }

    /// Limits on capacity are answered 429 (retry later: series expire); everything else is
    /// bad data, answered 400 (never retried).
    pub fn is_capacity(self) -> bool {
        matches!(self, Reason::MaxSeriesPerTenant | Reason::MaxSeries)
    }
}

/// `{a="b", c="d"}` for messages, shortened when huge.
pub fn describe(labels: &[(&str, &str)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        if s.len() > 200 {
            s.push('…');
            break;
        }
        s.push_str(k);
        s.push_str("=\"");
        let shown: String = v.chars().take(64).collect();
        loki_labels::escape_into(&mut s, &shown);
        if shown.len() < v.len() {
            s.push('…');
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// Checks a label set as received. Returns the reason and a message naming the series.
pub fn check(labels: &[(&str, &str)], limits: &LabelLimits) -> Result<(), (Reason, String)> {
    let fail = |reason: Reason, what: String| Err((reason, format!("series {}: {what}", describe(labels))));
    if labels.len() > limits.max_labels {
        return fail(
            Reason::TooManyLabels,
            format!("{} labels, over the limit of {} (metrics.max_labels_per_series)", labels.len(), limits.max_labels),
        );
    }
    let mut name = None;
    for (i, (k, v)) in labels.iter().enumerate() {
        if k.is_empty() {
            return fail(Reason::EmptyLabelName, format!("label {i} has an empty name"));
        }
        if k.len() > limits.max_name_bytes {
            return fail(
                Reason::LabelNameTooLong,
                format!(
                    "label name of {} bytes, over the limit of {} (metrics.max_label_name_bytes)",
                    k.len(),
                    limits.max_name_bytes
                ),
            );
        }
        if v.len() > limits.max_value_bytes {
            return fail(
                Reason::LabelValueTooLong,
                format!(
                    "value of label {k:?} is {} bytes, over the limit of {} (metrics.max_label_value_bytes)",
                    v.len(),
                    limits.max_value_bytes
                ),
            );
        }
        if !loki_labels::is_valid_label_name(k) {
            return fail(
                Reason::InvalidLabelName,
                format!("invalid label name {k:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)"),
            );
        }
        if v.is_empty() {
            return fail(Reason::EmptyLabelValue, format!("label {k:?} has an empty value"));
        }
        if i > 0 {
            let prev = labels[i - 1].0;
            if prev == *k {
                return fail(Reason::DuplicateLabel, format!("duplicate label name {k:?}"));
            }
            if prev > *k {
                return fail(
                    Reason::UnsortedLabels,
                    format!("labels are not sorted by name: {k:?} comes after {prev:?}"),
                );
            }
        }
        if *k == "__name__" {
            name = Some(*v);
        }
    }
    match name {
        None => fail(Reason::MissingMetricName, "no metric name (label __name__)".into()),
        Some(n) if !is_valid_metric_name(n) => {
            fail(Reason::InvalidMetricName, format!("invalid metric name {n:?} (must match [a-zA-Z_:][a-zA-Z0-9_:]*)"))
        }
        Some(_) => Ok(()),
    }
}

pub fn is_valid_metric_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LabelLimits = LabelLimits { max_labels: 4, max_name_bytes: 10, max_value_bytes: 20 };

    fn reason(labels: &[(&str, &str)]) -> Option<Reason> {
        check(labels, &LIMITS).err().map(|(r, _)| r)
    }

    #[test]
    fn spec_rules_and_limits() {
        assert_eq!(reason(&[("__name__", "up"), ("job", "a")]), None);
        assert_eq!(reason(&[("job", "a")]), Some(Reason::MissingMetricName));
        assert_eq!(reason(&[("__name__", "1up")]), Some(Reason::InvalidMetricName));
        assert_eq!(reason(&[("__name__", "up"), ("", "a")]), Some(Reason::EmptyLabelName));
        assert_eq!(reason(&[("__name__", "up"), ("job", "")]), Some(Reason::EmptyLabelValue));
        assert_eq!(reason(&[("__name__", "up"), ("job", "a"), ("job", "b")]), Some(Reason::DuplicateLabel));
        assert_eq!(reason(&[("job", "a"), ("__name__", "up")]), Some(Reason::UnsortedLabels));
        assert_eq!(reason(&[("__name__", "up"), ("a-b", "x")]), Some(Reason::InvalidLabelName));
        assert_eq!(
            reason(&[("__name__", "up"), ("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]),
            Some(Reason::TooManyLabels)
        );
        assert_eq!(reason(&[("__name__", "up"), ("abcdefghijk", "x")]), Some(Reason::LabelNameTooLong));
        assert_eq!(reason(&[("__name__", "up"), ("a", "x".repeat(21).as_str())]), Some(Reason::LabelValueTooLong));
    }

    #[test]
    fn messages_name_the_series() {
        let (_, msg) = check(&[("job", "a"), ("__name__", "up")], &LIMITS).unwrap_err();
        assert_eq!(
            msg,
            r#"series {job="a", __name__="up"}: labels are not sorted by name: "__name__" comes after "job""#
        );
    }
}
