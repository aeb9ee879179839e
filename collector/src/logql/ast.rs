//! The parsed form of a LogQL query. Everything here is compiled (regexes built, templates
//! parsed) so evaluating a query never fails on its own text.

use super::pattern::Pattern;
use super::template::Template;
use crate::selector::{Matcher, Selector};
use memchr::memmem;
use regex::Regex;

/// A whole query: a log query (returns lines) or a metric query (returns numbers).
#[derive(Clone, Debug)]
pub enum Expr {
    Log(LogQuery),
    Metric(MetricExpr),
}

/// `{selector} stage*`.
#[derive(Clone, Debug)]
pub struct LogQuery {
    pub selector: Selector,
    pub stages: Vec<Stage>,
}

impl LogQuery {
    /// Byte strings every kept line contains: the `|=` filters that test the line as stored
    /// (before any `line_format` rewrites it). Hints for the store; never relied on.
    pub fn required_literals(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for stage in &self.stages {
            match stage {
                Stage::LineFormat(_) => break,
                Stage::LineFilter(f) if f.op == FilterOp::Contains && f.alternatives.len() == 1 => {
                    if let LineMatch::Literal(finder) = &f.alternatives[0]
                        && !finder.needle().is_empty()
                    {
                        out.push(finder.needle().to_vec());
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Whether `line` passes the line filters, ignoring every other stage. Kept for
    /// `LogStore::query` (the store's first-cut scan); the engine in [`super::engine`] runs the
    /// whole pipeline.
    pub fn keep_line(&self, line: &str) -> bool {
        self.stages.iter().all(|s| match s {
            Stage::LineFilter(f) => f.keep(line),
            _ => true,
        })
    }

    /// True when no stage can change labels or the line (only line filters): results keep
    /// their stream's labels, which lets the engine skip building label sets.
    pub fn only_line_filters(&self) -> bool {
        self.stages.iter().all(|s| matches!(s, Stage::LineFilter(_)))
    }
}

/// One step of a log pipeline, applied left to right.
#[derive(Clone, Debug)]
pub enum Stage {
    LineFilter(LineFilter),
    /// `| json` (all fields, flattened with `_`) or `| json a="x.y", b`.
    Json(Vec<(String, JsonPath)>),
    /// `| logfmt [--strict] [--keep-empty] [a="key", b]`.
    Logfmt {
        strict: bool,
        keep_empty: bool,
        params: Vec<(String, String)>,
    },
    /// `| regexp "(?P<name>...)"`: named groups become labels.
    Regexp {
        re: Regex,
        names: Vec<(usize, String)>,
    },
    /// `| pattern "<ip> - <_> <status>"`.
    Pattern(Pattern),
    LabelFilter(LabelFilter),
    /// `| line_format "{{.label}}"`.
    LineFormat(Template),
    /// `| drop a, b="x"`: removes labels (those whose value matches, when given a matcher).
    Drop(Vec<LabelRef>),
    /// `| keep a, b="x"`: keeps only these labels.
    Keep(Vec<LabelRef>),
}

/// A label named in `drop`/`keep`, optionally with a value matcher.
#[derive(Clone, Debug)]
pub struct LabelRef {
    pub name: String,
    pub matcher: Option<Matcher>,
}

/// A JSON path in `| json label="a.b[0]"`.
pub type JsonPath = Vec<JsonStep>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonStep {
    Key(String),
    Index(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    /// `|=` and `|~`: keep lines that match.
    Contains,
    /// `!=` and `!~`: drop lines that match.
    NotContains,
}

/// `|= "a" or "b"`: the line matches when any alternative matches.
#[derive(Clone, Debug)]
pub struct LineFilter {
    pub op: FilterOp,
    pub alternatives: Vec<LineMatch>,
}

#[derive(Clone, Debug)]
pub enum LineMatch {
    Literal(Box<memmem::Finder<'static>>),
    Regex(Regex),
}

impl LineMatch {
    fn matches(&self, line: &str) -> bool {
        match self {
            LineMatch::Literal(f) => f.find(line.as_bytes()).is_some(),
            LineMatch::Regex(re) => re.is_match(line),
        }
    }
}

impl LineFilter {
    pub fn keep(&self, line: &str) -> bool {
        let any = self.alternatives.iter().any(|m| m.matches(line));
        match self.op {
            FilterOp::Contains => any,
            FilterOp::NotContains => !any,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    pub fn test<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
        }
    }
}

/// A label filter after parsing: `| status >= 400 and level=~"warn|error"`.
#[derive(Clone, Debug)]
pub enum LabelFilter {
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
    /// `=`, `!=`, `=~`, `!~` against the value (a missing label is the empty string).
    String(Matcher),
    /// The value parsed as a float.
    Number {
        name: String,
        op: CmpOp,
        value: f64,
    },
    /// The value parsed as a Go duration (`1.5s`, `250ms`), compared in nanoseconds.
    Duration {
        name: String,
        op: CmpOp,
        nanos: i128,
    },
    /// The value parsed as a byte size (`20MB`, `1KiB`).
    Bytes {
        name: String,
        op: CmpOp,
        bytes: u64,
    },
}

/// A metric query.
#[derive(Clone, Debug)]
pub enum MetricExpr {
    Range(RangeAgg),
    Vector(VectorAgg),
    Binary {
        op: BinOp,
        lhs: Box<MetricExpr>,
        rhs: Box<MetricExpr>,
    },
    /// A number literal: a scalar.
    Number(f64),
    /// `vector(1)`: one series with no labels.
    VectorOf(f64),
}

impl MetricExpr {
    /// Every range aggregation in the expression, left to right.
    pub fn range_aggs(&self) -> Vec<&RangeAgg> {
        let mut out = Vec::new();
        fn walk<'a>(e: &'a MetricExpr, out: &mut Vec<&'a RangeAgg>) {
            match e {
                MetricExpr::Range(r) => out.push(r),
                MetricExpr::Vector(v) => walk(&v.inner, out),
                MetricExpr::Binary { lhs, rhs, .. } => {
                    walk(lhs, out);
                    walk(rhs, out);
                }
                MetricExpr::Number(_) | MetricExpr::VectorOf(_) => {}
            }
        }
        walk(self, &mut out);
        out
    }

    /// True when the expression is a plain number (`1 + 2`), with no vector in it.
    pub fn is_scalar(&self) -> bool {
        match self {
            MetricExpr::Number(_) => true,
            MetricExpr::Binary { lhs, rhs, .. } => lhs.is_scalar() && rhs.is_scalar(),
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeFn {
    CountOverTime,
    Rate,
    BytesOverTime,
    BytesRate,
}

impl RangeFn {
    pub fn name(self) -> &'static str {
        match self {
            RangeFn::CountOverTime => "count_over_time",
            RangeFn::Rate => "rate",
            RangeFn::BytesOverTime => "bytes_over_time",
            RangeFn::BytesRate => "bytes_rate",
        }
    }

    /// Whether the function sums line sizes (otherwise it counts lines).
    pub fn counts_bytes(self) -> bool {
        matches!(self, RangeFn::BytesOverTime | RangeFn::BytesRate)
    }

    /// Whether the result is divided by the range in seconds.
    pub fn per_second(self) -> bool {
        matches!(self, RangeFn::Rate | RangeFn::BytesRate)
    }
}

/// `count_over_time({...} | ... [5m] offset 1h)`.
#[derive(Clone, Debug)]
pub struct RangeAgg {
    pub func: RangeFn,
    pub query: LogQuery,
    pub range_ns: i64,
    pub offset_ns: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Topk,
    Bottomk,
}

impl AggOp {
    pub fn name(self) -> &'static str {
        match self {
            AggOp::Sum => "sum",
            AggOp::Avg => "avg",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Count => "count",
            AggOp::Topk => "topk",
            AggOp::Bottomk => "bottomk",
        }
    }
}

/// `by (a, b)` or `without (a, b)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grouping {
    pub without: bool,
    pub labels: Vec<String>,
}

impl Grouping {
    /// The group's labels for a series: kept (`by`) or remaining (`without`) labels, sorted.
    pub fn project(&self, labels: &[(String, String)]) -> Vec<(String, String)> {
        labels.iter().filter(|(k, _)| self.labels.iter().any(|g| g == k) != self.without).cloned().collect()
    }
}

/// `sum by (level) (...)`, `topk(5, ...)`.
#[derive(Clone, Debug)]
pub struct VectorAgg {
    pub op: AggOp,
    /// `k` of topk/bottomk.
    pub param: Option<usize>,
    pub grouping: Grouping,
    pub inner: Box<MetricExpr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl BinOp {
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Mod => a % b,
            BinOp::Pow => a.powf(b),
        }
    }
}
