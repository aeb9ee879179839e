//! The PromQL subset's parser: instant vector selectors, `sum|avg|min|max|count` with
//! `by|without`, number literals, and arithmetic (`+ - * / % ^`) and comparisons (`== != > <
//! >= <=`, with or without `bool`) where at least one side is a number.
//!
//! Everything else in PromQL is recognised far enough to be refused by name ("range vectors
//! are not supported"), so a Grafana user sees what to change instead of a bare syntax error.
//! Errors carry the line and column, formatted like Prometheus' (`1:7: parse error: ...`).

use crate::selector::{MatchOp, Matcher, ParseError, Selector, parse_braces, skip_ws};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

impl AggOp {
    fn from_name(name: &str) -> Option<AggOp> {
        match name.to_ascii_lowercase().as_str() {
            "sum" => Some(AggOp::Sum),
            "avg" => Some(AggOp::Avg),
            "min" => Some(AggOp::Min),
            "max" => Some(AggOp::Max),
            "count" => Some(AggOp::Count),
            _ => None,
        }
    }
}

/// PromQL aggregations this subset does not evaluate (refused by name).
const OTHER_AGGREGATIONS: [&str; 7] = ["stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// No clause: everything in one group.
    All,
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(self, BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le)
    }

    /// Arithmetic result, or for comparisons `a` when the comparison holds (as Prometheus'
    /// `vectorElemBinop`); the flag says whether it holds (always true for arithmetic).
    pub fn apply(self, a: f64, b: f64) -> (f64, bool) {
        match self {
            BinOp::Add => (a + b, true),
            BinOp::Sub => (a - b, true),
            BinOp::Mul => (a * b, true),
            BinOp::Div => (a / b, true),
            BinOp::Mod => (a % b, true),
            BinOp::Pow => (a.powf(b), true),
            BinOp::Eq => (a, a == b),
            BinOp::Ne => (a, a != b),
            BinOp::Gt => (a, a > b),
            BinOp::Lt => (a, a < b),
            BinOp::Ge => (a, a >= b),
            BinOp::Le => (a, a <= b),
        }
    }

    /// Scalar-with-scalar result (comparisons need `bool` there and give 1 or 0).
    pub fn scalar(self, a: f64, b: f64) -> f64 {
        match self.apply(a, b) {
            (_, keep) if self.is_comparison() => f64::from(u8::from(keep)),
            (v, _) => v,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Expr {
    Number(f64),
    Selector(Selector),
    Aggregate {
        op: AggOp,
        grouping: Grouping,
        expr: Box<Expr>,
    },
    /// `bool` is the comparison modifier: 1/0 for every element instead of filtering.
    Binary {
        op: BinOp,
        bool_modifier: bool,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Negate(Box<Expr>),
}

impl Expr {
    /// True when the expression yields an instant vector (not a scalar).
    pub fn is_vector(&self) -> bool {
        match self {
            Expr::Number(_) => false,
            Expr::Selector(_) | Expr::Aggregate { .. } => true,
            Expr::Binary { lhs, rhs, .. } => lhs.is_vector() || rhs.is_vector(),
            Expr::Negate(e) => e.is_vector(),
        }
    }
}

/// A parse error positioned like Prometheus reports it: `line:column: parse error: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: parse error: {message}")]
pub struct QueryError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl QueryError {
    fn at(input: &str, offset: usize, message: impl Into<String>) -> Self {
        let offset = offset.min(input.len());
        let before = input.get(..offset).unwrap_or(input);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        QueryError { line, column, message: message.into() }
    }

    fn from_selector(input: &str, e: ParseError) -> Self {
        // `ParseError` counts columns over the whole input; recompute line and column.
        let offset = input.char_indices().nth(e.column.saturating_sub(1)).map_or(input.len(), |(i, _)| i);
        QueryError::at(input, offset, e.message)
    }
}

/// The most nesting a query may have (parentheses, aggregations, operators), so a hostile
/// query cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    input: &'a str,
    b: &'a [u8],
    pos: usize,
    depth: usize,
}

/// Parses a query of the supported subset.
pub fn parse(input: &str) -> Result<Expr, QueryError> {
    let mut p = Parser { input, b: input.as_bytes(), pos: 0, depth: 0 };
    p.ws();
    if p.pos >= p.b.len() {
        return Err(QueryError::at(input, 0, "no expression found in input"));
    }
    let e = p.expr()?;
    p.ws();
    if p.pos < p.b.len() {
        return Err(p.err(format!("unexpected {}", p.describe_here())));
    }
    Ok(e)
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

impl<'a> Parser<'a> {
    fn err(&self, message: impl Into<String>) -> QueryError {
        QueryError::at(self.input, self.pos, message)
    }

    fn ws(&mut self) {
        loop {
            self.pos = skip_ws(self.b, self.pos);
            // Comments run to the end of the line.
            if self.b.get(self.pos) == Some(&b'#') {
                while self.pos < self.b.len() && self.b[self.pos] != b'\n' {
                    self.pos += 1;
                }
                continue;
            }
            break;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn describe_here(&self) -> String {
        match self.input.get(self.pos..).and_then(|s| s.chars().next()) {
            None => "end of input".into(),
            Some(c) => format!("character {c:?}"),
        }
    }

    fn ident_at(&self, pos: usize) -> &'a str {
        let mut end = pos;
        if end < self.b.len() && is_ident_start(self.b[end]) {
            end += 1;
            while end < self.b.len() && is_ident_char(self.b[end]) {
                end += 1;
            }
        }
        &self.input[pos..end]
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(format!("query nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    /// expr := additive (('==' | '!=' | '>' | '<' | '>=' | '<=') ['bool'] additive)*
    fn expr(&mut self) -> Result<Expr, QueryError> {
        self.enter()?;
        let mut lhs = self.additive()?;
        loop {
            self.ws();
            let rest = &self.b[self.pos..];
            let (op, len) = if rest.starts_with(b"==") {
                (BinOp::Eq, 2)
            } else if rest.starts_with(b"!=") {
                (BinOp::Ne, 2)
            } else if rest.starts_with(b">=") {
                (BinOp::Ge, 2)
            } else if rest.starts_with(b"<=") {
                (BinOp::Le, 2)
            } else if rest.starts_with(b">") {
                (BinOp::Gt, 1)
            } else if rest.starts_with(b"<") {
                (BinOp::Lt, 1)
            } else {
                self.refuse_other_operators()?;
                break;
            };
            let at = self.pos;
            self.pos += len;
            self.ws();
            let bool_modifier = self.ident_at(self.pos).eq_ignore_ascii_case("bool");
            if bool_modifier {
                self.pos += 4;
            }
            let rhs = self.additive()?;
            if !lhs.is_vector() && !rhs.is_vector() && !bool_modifier {
                return Err(QueryError::at(self.input, at, "comparisons between scalars must use BOOL modifier"));
            }
            lhs = self.binary_with(op, bool_modifier, lhs, rhs, at)?;
        }
        self.depth -= 1;
        Ok(lhs)
    }

    /// additive := term (('+' | '-') term)*
    fn additive(&mut self) -> Result<Expr, QueryError> {
        let mut lhs = self.term()?;
        loop {
            self.ws();
            let op = match self.peek() {
                Some(b'+') => BinOp::Add,
                Some(b'-') => BinOp::Sub,
                _ => break,
            };
            let at = self.pos;
            self.pos += 1;
            let rhs = self.term()?;
            lhs = self.binary(op, lhs, rhs, at)?;
        }
        Ok(lhs)
    }

    /// term := unary (('*' | '/' | '%') unary)*
    fn term(&mut self) -> Result<Expr, QueryError> {
        let mut lhs = self.unary()?;
        loop {
            self.ws();
            let op = match self.peek() {
                Some(b'*') => BinOp::Mul,
                Some(b'/') => BinOp::Div,
                Some(b'%') => BinOp::Mod,
                _ => break,
            };
            let at = self.pos;
            self.pos += 1;
            let rhs = self.unary()?;
            lhs = self.binary(op, lhs, rhs, at)?;
        }
        Ok(lhs)
    }

    /// unary := ('-' | '+') unary | power
    fn unary(&mut self) -> Result<Expr, QueryError> {
        self.enter()?;
        self.ws();
        let e = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                match self.unary()? {
                    Expr::Number(n) => Expr::Number(-n),
                    e => Expr::Negate(Box::new(e)),
                }
            }
            Some(b'+') => {
                self.pos += 1;
                self.unary()?
            }
            _ => self.power()?,
        };
        self.depth -= 1;
        Ok(e)
    }

    /// power := primary ('^' unary)?   (right-associative, binds tighter than unary minus)
    fn power(&mut self) -> Result<Expr, QueryError> {
        let base = self.primary()?;
        self.ws();
        if self.peek() == Some(b'^') {
            let at = self.pos;
            self.pos += 1;
            let exp = self.unary()?;
            return self.binary(BinOp::Pow, base, exp, at);
        }
        Ok(base)
    }

    fn binary(&self, op: BinOp, lhs: Expr, rhs: Expr, at: usize) -> Result<Expr, QueryError> {
        self.binary_with(op, false, lhs, rhs, at)
    }

    fn binary_with(&self, op: BinOp, bool_modifier: bool, lhs: Expr, rhs: Expr, at: usize) -> Result<Expr, QueryError> {
        if lhs.is_vector() && rhs.is_vector() {
            return Err(QueryError::at(
                self.input,
                at,
                "binary operations between two vectors are not supported (only vector-with-number operations)",
            ));
        }
        if let (Expr::Number(a), Expr::Number(b)) = (&lhs, &rhs) {
            return Ok(Expr::Number(op.scalar(*a, *b)));
        }
        Ok(Expr::Binary { op, bool_modifier, lhs: Box::new(lhs), rhs: Box::new(rhs) })
    }

    fn refuse_other_operators(&self) -> Result<(), QueryError> {
        let word = self.ident_at(self.pos).to_ascii_lowercase();
        if matches!(word.as_str(), "and" | "or" | "unless" | "atan2") {
            return Err(self.err(format!("the {word:?} operator is not supported")));
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        self.ws();
        let start = self.pos;
        let e = match self.peek() {
            None => return Err(self.err("unexpected end of input")),
            Some(b'(') => {
                self.pos += 1;
                let e = self.expr()?;
                self.ws();
                if self.peek() != Some(b')') {
                    return Err(self.err(format!("unexpected {}: expected \")\"", self.describe_here())));
                }
                self.pos += 1;
                e
            }
            Some(b'{') => self.selector(None, start)?,
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number()?,
            Some(b'"' | b'\'' | b'`') => return Err(self.err("string literals are not supported")),
            Some(c) if is_ident_start(c) => {
                let ident = self.ident_at(self.pos);
                let lower = ident.to_ascii_lowercase();
                if lower == "inf" || lower == "nan" {
                    self.pos += ident.len();
                    Expr::Number(if lower == "inf" { f64::INFINITY } else { f64::NAN })
                } else if let Some(op) = AggOp::from_name(ident) {
                    self.pos += ident.len();
                    self.aggregation(op, start)?
                } else {
                    self.pos += ident.len();
                    let after = skip_ws(self.b, self.pos);
                    if OTHER_AGGREGATIONS.contains(&lower.as_str()) {
                        return Err(QueryError::at(
                            self.input,
                            start,
                            format!("the {lower} aggregation is not supported"),
                        ));
                    }
                    if self.b.get(after) == Some(&b'(') {
                        return Err(QueryError::at(
                            self.input,
                            start,
                            format!("function calls are not supported ({ident})"),
                        ));
                    }
                    if matches!(lower.as_str(), "by" | "without" | "offset" | "bool" | "on" | "ignoring") {
                        return Err(QueryError::at(self.input, start, format!("unexpected keyword {ident:?}")));
                    }
                    self.selector(Some(ident), start)?
                }
            }
            Some(_) => return Err(self.err(format!("unexpected {}", self.describe_here()))),
        };
        Ok(e)
    }

    fn number(&mut self) -> Result<Expr, QueryError> {
        let start = self.pos;
        if self.b[self.pos..].starts_with(b"0x") || self.b[self.pos..].starts_with(b"0X") {
            self.pos += 2;
            let digits = self.pos;
            while self.pos < self.b.len() && self.b[self.pos].is_ascii_hexdigit() {
                self.pos += 1;
            }
            let n = u64::from_str_radix(&self.input[digits..self.pos], 16)
                .map_err(|_| QueryError::at(self.input, start, "invalid hexadecimal number"))?;
            return Ok(Expr::Number(n as f64));
        }
        while self.pos < self.b.len() && (self.b[self.pos].is_ascii_digit() || self.b[self.pos] == b'.') {
            self.pos += 1;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let save = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos = save;
            }
            while self.pos < self.b.len() && self.b[self.pos].is_ascii_digit() {
                self.pos += 1;
            }
        }
        if self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            // `5m` and the like: durations only make sense in range selectors.
            return Err(QueryError::at(self.input, start, "durations and range vectors are not supported"));
        }
        let text = &self.input[start..self.pos];
        text.parse::<f64>()
            .map(Expr::Number)
            .map_err(|_| QueryError::at(self.input, start, format!("invalid number {text:?}")))
    }

    /// `name`, `name{...}` or `{...}`, then refuses range, offset and `@` modifiers.
    fn selector(&mut self, name: Option<&str>, start: usize) -> Result<Expr, QueryError> {
        let mut sel = Selector::default();
        if let Some(n) = name {
            let m = Matcher::new("__name__", MatchOp::Equal, n).map_err(|e| QueryError::at(self.input, start, e))?;
            sel.matchers.push(m);
        }
        let after = skip_ws(self.b, self.pos);
        if self.b.get(after) == Some(&b'{') {
            let (braces, end) =
                parse_braces(self.input, after).map_err(|e| QueryError::from_selector(self.input, e))?;
            if name.is_some() && braces.matchers.iter().any(|m| m.name == "__name__") {
                return Err(QueryError::at(
                    self.input,
                    start,
                    "metric name must not be set twice: in front of the braces and as __name__",
                ));
            }
            sel.matchers.extend(braces.matchers);
            self.pos = end;
        }
        if sel.matchers.is_empty() || !sel.has_non_empty_matcher() {
            return Err(QueryError::at(
                self.input,
                start,
                "vector selector must contain at least one non-empty matcher",
            ));
        }
        let after = skip_ws(self.b, self.pos);
        match self.b.get(after) {
            Some(b'[') => {
                return Err(QueryError::at(
                    self.input,
                    after,
                    "range vectors are not supported (only instant vectors)",
                ));
            }
            Some(b'@') => return Err(QueryError::at(self.input, after, "the @ modifier is not supported")),
            _ => {}
        }
        if self.ident_at(after).eq_ignore_ascii_case("offset") {
            return Err(QueryError::at(self.input, after, "the offset modifier is not supported"));
        }
        Ok(Expr::Selector(sel))
    }

    /// After the operator name: `[by|without (...)] ( expr ) [by|without (...)]`.
    fn aggregation(&mut self, op: AggOp, start: usize) -> Result<Expr, QueryError> {
        let mut grouping = self.grouping()?;
        self.ws();
        if self.peek() != Some(b'(') {
            return Err(self.err(format!("unexpected {}: expected \"(\" after the aggregation", self.describe_here())));
        }
        self.pos += 1;
        let expr = self.expr()?;
        self.ws();
        match self.peek() {
            Some(b')') => self.pos += 1,
            Some(b',') => {
                return Err(self.err("aggregations with a parameter (topk, quantile, count_values) are not supported"));
            }
            _ => return Err(self.err(format!("unexpected {}: expected \")\"", self.describe_here()))),
        }
        if grouping == Grouping::All {
            grouping = self.grouping()?;
        }
        if !expr.is_vector() {
            return Err(QueryError::at(
                self.input,
                start,
                "expected type instant vector in aggregation expression, got scalar",
            ));
        }
        Ok(Expr::Aggregate { op, grouping, expr: Box::new(expr) })
    }

    fn grouping(&mut self) -> Result<Grouping, QueryError> {
        let save = self.pos;
        self.ws();
        let word = self.ident_at(self.pos).to_ascii_lowercase();
        let by = match word.as_str() {
            "by" => true,
            "without" => false,
            _ => {
                self.pos = save;
                return Ok(Grouping::All);
            }
        };
        self.pos += word.len();
        self.ws();
        if self.peek() != Some(b'(') {
            return Err(self.err(format!("unexpected {}: expected \"(\" after {word}", self.describe_here())));
        }
        self.pos += 1;
        let mut labels = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(b')') {
                self.pos += 1;
                break;
            }
            let label = self.ident_at(self.pos);
            if label.is_empty() || !osprey_protocol::loki_labels::is_valid_label_name(label) {
                return Err(self.err(format!("unexpected {}: expected a label name", self.describe_here())));
            }
            labels.push(label.to_string());
            self.pos += label.len();
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {}
                _ => return Err(self.err(format!("unexpected {}: expected \",\" or \")\"", self.describe_here()))),
            }
        }
        Ok(if by { Grouping::By(labels) } else { Grouping::Without(labels) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(q in "\\PC{0,64}") {
            let _ = parse(&q);
        }

        #[test]
        fn query_shaped_text_never_panics(q in "[ a-z_(){}=~!\"<>^%*/+,.0-9-]{0,48}") {
            let _ = parse(&q);
        }

        #[test]
        fn aggregations_of_selectors_parse(
            op in "sum|avg|min|max|count",
            by in proptest::option::of(("by|without", proptest::collection::vec("[a-z_][a-z0-9_]{0,6}", 0..3))),
            metric in "[a-z_:][a-z0-9_:]{0,10}",
        ) {
            let grouping = by.map(|(kw, labels)| format!(" {kw} ({})", labels.join(", "))).unwrap_or_default();
            let q = format!("{op}{grouping} ({metric})");
            prop_assume!(!["sum", "avg", "min", "max", "count", "by", "without", "inf", "nan", "offset", "bool", "on", "ignoring", "and", "or", "unless", "atan2", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group"].contains(&metric.as_str()));
            let parsed = parse(&q);
            prop_assert!(matches!(parsed, Ok(Expr::Aggregate { .. })), "{q}: {parsed:?}");
        }
    }

    fn ok(q: &str) -> Expr {
        parse(q).unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    fn err(q: &str) -> String {
        parse(q).map(|e| format!("{e:?}")).expect_err(q).to_string()
    }

    #[test]
    fn parses_the_subset() {
        assert!(matches!(ok("up"), Expr::Selector(s) if s.matchers.len() == 1));
        assert!(matches!(ok(r#"up{job="a", mode!~"idle|iowait"}"#), Expr::Selector(s) if s.matchers.len() == 3));
        assert!(matches!(ok(r#"{__name__=~"node_.*"}"#), Expr::Selector(_)));
        let Expr::Aggregate { op, grouping, .. } = ok("sum by (job, mode) (node_cpu_seconds_total)") else { panic!() };
        assert_eq!((op, grouping), (AggOp::Sum, Grouping::By(vec!["job".into(), "mode".into()])));
        let Expr::Aggregate { grouping, .. } = ok("max(up) without (instance,)") else { panic!() };
        assert_eq!(grouping, Grouping::Without(vec!["instance".into()]));
        assert!(matches!(ok("COUNT(up)"), Expr::Aggregate { op: AggOp::Count, .. }));
        assert!(matches!(ok("avg(sum by (job) (up))"), Expr::Aggregate { op: AggOp::Avg, .. }));
        assert!(matches!(ok("1+1"), Expr::Number(n) if n == 2.0));
        assert!(matches!(ok("-2^2"), Expr::Number(n) if n == -4.0));
        assert!(matches!(ok("2^3^2"), Expr::Number(n) if n == 512.0));
        assert!(matches!(ok("(1 + 2) * 3 % 4"), Expr::Number(n) if n == 1.0));
        assert!(matches!(ok("0x1f + 1e3 + .5"), Expr::Number(n) if n == 1031.5));
        assert!(matches!(ok("Inf"), Expr::Number(n) if n.is_infinite()));
        assert!(matches!(ok("node_memory_MemTotal_bytes / 1024"), Expr::Binary { op: BinOp::Div, .. }));
        assert!(matches!(ok("up # a comment\n"), Expr::Selector(_)));
        assert!(matches!(ok("sum(up) by (job) * 2"), Expr::Binary { .. }));
        assert!(matches!(ok("osprey_agent_up == 0"), Expr::Binary { op: BinOp::Eq, bool_modifier: false, .. }));
        assert!(matches!(ok("up + 1 > bool 1"), Expr::Binary { op: BinOp::Gt, bool_modifier: true, .. }));
        assert!(matches!(ok("2 >= bool 1"), Expr::Number(n) if n == 1.0));
    }

    #[test]
    fn errors_say_what_is_unsupported_and_where() {
        assert_eq!(err(""), "1:1: parse error: no expression found in input");
        assert_eq!(err("rate(x[5m])"), "1:1: parse error: function calls are not supported (rate)");
        assert_eq!(err("x[5m]"), "1:2: parse error: range vectors are not supported (only instant vectors)");
        assert_eq!(err("up offset 5m"), "1:4: parse error: the offset modifier is not supported");
        assert_eq!(
            err("up > up"),
            "1:4: parse error: binary operations between two vectors are not supported (only vector-with-number operations)"
        );
        assert_eq!(err("1 > 0"), "1:3: parse error: comparisons between scalars must use BOOL modifier");
        assert_eq!(err("up and up"), "1:4: parse error: the \"and\" operator is not supported");
        assert_eq!(err("topk(3, up)"), "1:1: parse error: the topk aggregation is not supported");
        assert_eq!(
            err(r#"{job=~".*"}"#),
            "1:1: parse error: vector selector must contain at least one non-empty matcher"
        );
        assert_eq!(
            err("sum(1)"),
            "1:1: parse error: expected type instant vector in aggregation expression, got scalar"
        );
        assert_eq!(err("sum by (job (up)"), "1:13: parse error: unexpected character '(': expected \",\" or \")\"");
        assert_eq!(err("up\n  }"), "2:3: parse error: unexpected character '}'");
        assert!(err(r#"up{job="a""#).starts_with("1:11: parse error:"), "{}", err(r#"up{job="a""#));
        assert!(err(&"(".repeat(1000)).contains("nested"));
        assert_eq!(err("sum(up"), "1:7: parse error: unexpected end of input: expected \")\"");
    }
}
