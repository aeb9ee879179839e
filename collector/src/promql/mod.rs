//! A PromQL subset for `/api/v1/query`: what Grafana's Prometheus data source, alert rules on
//! fleet liveness and `promtool query instant` need from a store of latest samples.
//!
//! Supported: instant vector selectors (all four matchers), `sum`, `avg`, `min`, `max` and
//! `count` with `by (...)` or `without (...)` before or after the argument (nested too), number
//! literals, and arithmetic (`+ - * / % ^`) and comparisons (`== != > < >= <=`, `bool`)
//! between numbers or between a vector and a number (so `osprey_agent_up == 0` alerts).
//! Evaluation follows Prometheus 2.42 exactly where floating point can tell: series are visited
//! in label order, `avg` is the incremental mean, `min`/`max` replace a NaN, arithmetic drops
//! the metric name. A series is seen at time `t` when its latest sample is within
//! `[t - metrics.query_lookback, t]`; the store has no older samples, so queries about the past
//! see only series whose latest sample is that old.

pub mod parser;

use crate::metrics::{MetricsStore, TooManySeries, Window};
use parser::{AggOp, BinOp, Expr, Grouping};
use std::collections::HashMap;

pub use parser::{QueryError, parse};

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
}

/// Why a query that parsed could not be answered (Prometheus' `execution` errors, 422).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    TooManySeries(#[from] TooManySeries),
    #[error("vector cannot contain metrics with the same labelset")]
    DuplicateLabelset,
}

/// Where and when a query runs.
pub struct Context<'a> {
    pub store: &'a MetricsStore,
    pub tenant: &'a str,
    pub time_ms: i64,
    pub lookback_ms: i64,
}

pub fn eval(expr: &Expr, cx: &Context<'_>) -> Result<Value, EvalError> {
    Ok(match expr {
        Expr::Number(n) => Value::Scalar(*n),
        Expr::Selector(sel) => {
            let window = Window { min_ms: cx.time_ms.saturating_sub(cx.lookback_ms), max_ms: cx.time_ms };
            let mut picked = cx.store.select(cx.tenant, std::slice::from_ref(sel), window)?;
            // The order Prometheus' storage returns series in, which fixes float sums.
            picked.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
            Value::Vector(picked.into_iter().map(|s| Sample { labels: s.labels, value: s.value }).collect())
        }
        Expr::Aggregate { op, grouping, expr } => match eval(expr, cx)? {
            Value::Vector(v) => Value::Vector(aggregate(*op, grouping, v)),
            Value::Scalar(_) => unreachable_scalar(),
        },
        Expr::Negate(e) => match eval(e, cx)? {
            Value::Scalar(n) => Value::Scalar(-n),
            Value::Vector(v) => Value::Vector(with_scalar(v, BinOp::Mul, -1.0, false, false)?),
        },
        Expr::Binary { op, bool_modifier, lhs, rhs } => match (eval(lhs, cx)?, eval(rhs, cx)?) {
            (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(op.scalar(a, b)),
            (Value::Vector(v), Value::Scalar(b)) => Value::Vector(with_scalar(v, *op, b, false, *bool_modifier)?),
            (Value::Scalar(a), Value::Vector(v)) => Value::Vector(with_scalar(v, *op, a, true, *bool_modifier)?),
            // The parser refuses vector-vector operations.
            (Value::Vector(_), Value::Vector(_)) => Value::Vector(vec![]),
        },
    })
}

/// The parser only builds aggregations over vector expressions.
fn unreachable_scalar() -> Value {
    Value::Vector(vec![])
}

/// Vector-with-scalar operations as Prometheus 2.42's `VectorscalarBinop`: arithmetic applies
/// to every element and drops the metric name; a comparison keeps the elements for which it
/// holds (with their own value and name), or with `bool` gives every element 1 or 0 and drops
/// the name. `swap` is set when the scalar is on the left. Refuses a result in which two
/// elements have the same labels.
fn with_scalar(
    v: Vec<Sample>,
    op: BinOp,
    scalar: f64,
    swap: bool,
    bool_modifier: bool,
) -> Result<Vec<Sample>, EvalError> {
    let mut out: Vec<Sample> = Vec::with_capacity(v.len());
    for mut s in v {
        let (lhs, rhs) = if swap { (scalar, s.value) } else { (s.value, scalar) };
        let (mut value, mut keep) = op.apply(lhs, rhs);
        if op.is_comparison() && swap {
            value = rhs;
        }
        if bool_modifier {
            value = f64::from(u8::from(keep));
            keep = true;
        }
        if !keep {
            continue;
        }
        s.value = value;
        if !op.is_comparison() || bool_modifier {
            s.labels.retain(|(k, _)| k != "__name__");
        }
        out.push(s);
    }
    let mut seen: Vec<&Vec<(String, String)>> = out.iter().map(|s| &s.labels).collect();
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(EvalError::DuplicateLabelset);
    }
    out.shrink_to_fit();
    Ok(out)
}

struct Group {
    labels: Vec<(String, String)>,
    value: f64,
    mean: f64,
    count: u64,
}

/// `op by|without (...)`, group by group in order of first appearance, with Prometheus 2.42's
/// arithmetic.
fn aggregate(op: AggOp, grouping: &Grouping, input: Vec<Sample>) -> Vec<Sample> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    for s in input {
        let key: Vec<(String, String)> = match grouping {
            Grouping::All => vec![],
            Grouping::By(names) => {
                s.labels.iter().filter(|(k, v)| names.iter().any(|n| n == k) && !v.is_empty()).cloned().collect()
            }
            Grouping::Without(names) => {
                s.labels.iter().filter(|(k, _)| k != "__name__" && !names.iter().any(|n| n == k)).cloned().collect()
            }
        };
        let v = s.value;
        match index.get(&key) {
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(Group { labels: key, value: v, mean: v, count: 1 });
            }
            Some(&i) => {
                let g = &mut groups[i];
                g.count += 1;
                match op {
                    AggOp::Sum => g.value += v,
                    AggOp::Count => {}
                    AggOp::Max => {
                        if g.value < v || g.value.is_nan() {
                            g.value = v;
                        }
                    }
                    AggOp::Min => {
                        if g.value > v || g.value.is_nan() {
                            g.value = v;
                        }
                    }
                    AggOp::Avg => {
                        if g.mean.is_infinite() {
                            if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
                                continue;
                            }
                            if !v.is_infinite() && !v.is_nan() {
                                continue;
                            }
                        }
                        let n = g.count as f64;
                        g.mean += v / n - g.mean / n;
                    }
                }
            }
        }
    }
    groups
        .into_iter()
        .map(|g| Sample {
            labels: g.labels,
            value: match op {
                AggOp::Count => g.count as f64,
                AggOp::Avg => g.mean,
                _ => g.value,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), value }
    }

    fn input() -> Vec<Sample> {
        vec![
            sample(&[("__name__", "x"), ("job", "a"), ("mode", "idle")], 1.0),
            sample(&[("__name__", "x"), ("job", "a"), ("mode", "user")], 3.0),
            sample(&[("__name__", "x"), ("job", "b"), ("mode", "idle")], f64::NAN),
            sample(&[("__name__", "x"), ("job", "b"), ("mode", "user")], 5.0),
        ]
    }

    #[test]
    fn aggregations_match_prometheus() {
        let by_job = Grouping::By(vec!["job".into()]);
        let sums = aggregate(AggOp::Sum, &by_job, input());
        assert_eq!(sums[0], sample(&[("job", "a")], 4.0));
        assert!(sums[1].value.is_nan());
        let maxes = aggregate(AggOp::Max, &by_job, input());
        assert_eq!(maxes[1], sample(&[("job", "b")], 5.0), "max replaces a NaN");
        assert_eq!(aggregate(AggOp::Min, &Grouping::All, input()), vec![sample(&[], 1.0)]);
        assert_eq!(aggregate(AggOp::Count, &Grouping::Without(vec!["job".into()]), input()).len(), 2);
        assert_eq!(
            aggregate(AggOp::Count, &Grouping::Without(vec!["job".into()]), input())[0],
            sample(&[("mode", "idle")], 2.0)
        );
        assert_eq!(aggregate(AggOp::Avg, &by_job, input())[0], sample(&[("job", "a")], 2.0));
        // `by` a label nobody has groups everything together, without that label.
        assert_eq!(aggregate(AggOp::Count, &Grouping::By(vec!["zone".into()]), input()), vec![sample(&[], 4.0)]);
        let infs = vec![sample(&[("a", "1")], f64::INFINITY), sample(&[("a", "2")], 1.0)];
        assert_eq!(aggregate(AggOp::Avg, &Grouping::All, infs)[0].value, f64::INFINITY);
        assert!(aggregate(AggOp::Sum, &Grouping::All, vec![]).is_empty());
    }

    #[test]
    fn vector_scalar_operations_like_prometheus() {
        let one = || vec![sample(&[("__name__", "x"), ("job", "a")], 2.0)];
        let out = with_scalar(one(), BinOp::Mul, 10.0, false, false).unwrap();
        assert_eq!(out, vec![sample(&[("job", "a")], 20.0)], "arithmetic drops the name");
        assert_eq!(with_scalar(one(), BinOp::Sub, 10.0, true, false).unwrap()[0].value, 8.0, "10 - x");
        assert_eq!(with_scalar(one(), BinOp::Gt, 1.0, false, false).unwrap(), one(), "filter keeps name and value");
        assert!(with_scalar(one(), BinOp::Gt, 3.0, false, false).unwrap().is_empty());
        assert_eq!(with_scalar(one(), BinOp::Lt, 1.0, true, false).unwrap(), one(), "1 < x keeps x's value");
        assert_eq!(with_scalar(one(), BinOp::Eq, 3.0, false, true).unwrap(), vec![sample(&[("job", "a")], 0.0)]);
        let clash =
            vec![sample(&[("__name__", "x"), ("job", "a")], 1.0), sample(&[("__name__", "y"), ("job", "a")], 1.0)];
        assert!(matches!(with_scalar(clash, BinOp::Add, 0.0, false, false), Err(EvalError::DuplicateLabelset)));
    }
}
