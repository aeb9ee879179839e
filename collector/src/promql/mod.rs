//! A PromQL subset for `/api/v1/query`: what Grafana's Prometheus data source, alert rules on
//! fleet liveness and `promtool query instant` need from a store of latest samples.
//!
//! Supported: instant vector selectors (all four matchers), `sum`, `avg`, `min`, `max` and
//! `count` with `by (...)` or `without (...)` before or after the argument (nested too), number
//! literals, and arithmetic (`+ - * / % ^`) between numbers or between a vector and a number.
//! Evaluation follows Prometheus 2.42 exactly where floating point can tell: series are visited
//! in label order, `avg` is the incremental mean, `min`/`max` replace a NaN, arithmetic drops
//! the metric name. A series is seen at time `t` when its latest sample is within
//! `[t - metrics.query_lookback, t]`; the store has no older samples, so queries about the past
//! see only series whose latest sample is that old.

pub mod parser;

use crate::metrics::{MetricsStore, TooManySeries, Window};
use parser::{AggOp, Expr, Grouping};
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
            Value::Vector(v) => Value::Vector(arith(v, |x| -x)?),
        },
        Expr::Binary { op, lhs, rhs } => match (eval(lhs, cx)?, eval(rhs, cx)?) {
            (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(op.apply(a, b)),
            (Value::Vector(v), Value::Scalar(b)) => Value::Vector(arith(v, |x| op.apply(x, b))?),
            (Value::Scalar(a), Value::Vector(v)) => Value::Vector(arith(v, |x| op.apply(a, x))?),
            // The parser refuses vector-vector operations.
            (Value::Vector(_), Value::Vector(_)) => Value::Vector(vec![]),
        },
    })
}

/// The parser only builds aggregations over vector expressions.
fn unreachable_scalar() -> Value {
    Value::Vector(vec![])
}

/// Applies `f` to every value and drops the metric name, as Prometheus' arithmetic does;
/// refuses the result when two elements end up with the same labels.
fn arith(v: Vec<Sample>, f: impl Fn(f64) -> f64) -> Result<Vec<Sample>, EvalError> {
    let mut out: Vec<Sample> = v
        .into_iter()
        .map(|mut s| {
            s.labels.retain(|(k, _)| k != "__name__");
            s.value = f(s.value);
            s
        })
        .collect();
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
    fn arithmetic_drops_the_name_and_refuses_collisions() {
        let out = arith(vec![sample(&[("__name__", "x"), ("job", "a")], 2.0)], |v| v * 10.0).unwrap();
        assert_eq!(out, vec![sample(&[("job", "a")], 20.0)]);
        let clash = vec![sample(&[("__name__", "x"), ("job", "a")], 1.0), sample(&[("__name__", "y"), ("job", "a")], 1.0)];
        assert!(matches!(arith(clash, |v| v), Err(EvalError::DuplicateLabelset)));
    }
}
