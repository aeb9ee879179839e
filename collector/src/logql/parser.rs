//! A hand-written recursive-descent parser for the LogQL subset (grammar in `mod.rs`).
//!
//! Hand-written because errors must point at the column of the problem and say what was
//! expected there, and because regexes, patterns and templates are compiled while parsing, so a
//! parsed query can always run.

use super::ast::*;
use super::pattern::Pattern;
use super::template::Template;
use super::{ParseError, REGEX_SIZE_LIMIT};
use crate::selector::{MatchOp, Matcher, parse_braces, parse_string};
use memchr::memmem;

/// Functions Loki has that this subset does not, so the error can say so plainly.
const UNSUPPORTED_FUNCS: &[&str] = &[
    "avg_over_time",
    "sum_over_time",
    "min_over_time",
    "max_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "quantile_over_time",
    "first_over_time",
    "last_over_time",
    "absent_over_time",
    "rate_counter",
    "stddev",
    "stdvar",
    "quantile",
    "sort",
    "sort_desc",
    "label_replace",
    "approx_topk",
];

const UNSUPPORTED_STAGES: &[&str] = &["unwrap", "label_format", "decolorize", "unpack", "distinct", "ip"];

const SUPPORTED: &str =
    "supported: count_over_time, rate, bytes_over_time, bytes_rate, sum, avg, min, max, count, topk, bottomk, vector";

pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let mut p = Parser { src: input, b: input.as_bytes(), pos: 0 };
    p.ws();
    if p.pos >= p.b.len() {
        return Err(p.err(p.pos, "empty query: give a stream selector like {job=\"varlogs\"}"));
    }
    let expr = if p.b[p.pos] == b'{' {
        let q = p.log_query()?;
        p.ws();
        if p.pos < p.b.len() {
            let msg = if matches!(p.b[p.pos], b'+' | b'-' | b'*' | b'/' | b'%' | b'^') {
                "a log query cannot be used in arithmetic: wrap it in count_over_time(...[5m]) or rate(...[5m])"
            } else {
                "unexpected text after the log query: expected a line filter (|=, !=, |~, !~) or a '|' stage"
            };
            return Err(p.err(p.pos, msg));
        }
        Expr::Log(q)
    } else {
        let m = p.binary(0)?;
        p.ws();
        if p.pos < p.b.len() {
            return Err(p.err(p.pos, "unexpected text after the expression"));
        }
        Expr::Metric(m)
    };
    Ok(expr)
}

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl<'a> Parser<'a> {
    fn err(&self, at: usize, msg: impl Into<String>) -> ParseError {
        ParseError::at(self.src, at, msg)
    }

    /// Skips whitespace and `#` comments (to the end of the line).
    fn ws(&mut self) {
        while self.pos < self.b.len() {
            match self.b[self.pos] {
                c if c.is_ascii_whitespace() => self.pos += 1,
                b'#' => {
                    while self.pos < self.b.len() && self.b[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.pos).copied()
    }

    fn starts(&mut self, s: &str) -> bool {
        self.ws();
        self.src[self.pos..].starts_with(s)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.starts(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str, what: &str) -> Result<(), ParseError> {
        if self.eat(s) { Ok(()) } else { Err(self.err(self.pos, format!("expected '{s}' {what}"))) }
    }

    fn peek_ident(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.pos;
        if start >= self.b.len() || !is_ident_start(self.b[start]) {
            return None;
        }
        let mut end = start;
        while end < self.b.len() && is_ident_char(self.b[end]) {
            end += 1;
        }
        Some(&self.src[start..end])
    }

    fn ident(&mut self) -> Option<&'a str> {
        let id = self.peek_ident()?;
        self.pos += id.len();
        Some(id)
    }

    fn string(&mut self, what: &str) -> Result<(usize, String), ParseError> {
        self.ws();
        let at = self.pos;
        match self.b.get(at) {
            Some(b'"' | b'`') => {
                let (s, next) = parse_string(self.src, at).map_err(|e| ParseError::from_selector(self.src, e))?;
                self.pos = next;
                Ok((at, s))
            }
            _ => Err(self.err(at, format!("expected a quoted string {what}"))),
        }
    }

    fn regex(&self, at: usize, pattern: &str) -> Result<regex::Regex, ParseError> {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| self.err(at, format!("invalid regex {pattern:?}: {e}")))
    }

    // ---- log queries ----

    fn selector(&mut self) -> Result<crate::selector::Selector, ParseError> {
        self.ws();
        let at = self.pos;
        let (sel, next) = parse_braces(self.src, at).map_err(|e| ParseError::from_selector(self.src, e))?;
        if !sel.has_non_empty_matcher() {
            return Err(self.err(
                at,
                "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will",
            ));
        }
        self.pos = next;
        Ok(sel)
    }

    fn log_query(&mut self) -> Result<LogQuery, ParseError> {
        let selector = self.selector()?;
        let stages = self.stages()?;
        Ok(LogQuery { selector, stages })
    }

    fn stages(&mut self) -> Result<Vec<Stage>, ParseError> {
        let mut stages = Vec::new();
        loop {
            self.ws();
            let rest = &self.src[self.pos..];
            if rest.starts_with("|=") || rest.starts_with("|~") || rest.starts_with("!=") || rest.starts_with("!~") {
                stages.push(Stage::LineFilter(self.line_filter()?));
            } else if rest.starts_with('|') {
                self.pos += 1;
                stages.push(self.pipe_stage()?);
            } else {
                return Ok(stages);
            }
        }
    }

    fn line_filter(&mut self) -> Result<LineFilter, ParseError> {
        let op_text = &self.src[self.pos..self.pos + 2];
        self.pos += 2;
        let regex = op_text.ends_with('~');
        let op = if op_text.starts_with('|') { FilterOp::Contains } else { FilterOp::NotContains };
        if self.peek_ident() == Some("ip") {
            return Err(self.err(self.pos, "ip() line filters are not supported"));
        }
        let mut alternatives = Vec::new();
        loop {
            let (at, value) = self.string("after a line filter operator")?;
            alternatives.push(if regex {
                LineMatch::Regex(self.regex(at, &value)?)
            } else {
                LineMatch::Literal(Box::new(memmem::Finder::new(value.as_bytes()).into_owned()))
            });
            // `|= "a" or "b"`
            let save = self.pos;
            if self.ident() == Some("or") && matches!(self.peek(), Some(b'"' | b'`')) {
                continue;
            }
            self.pos = save;
            return Ok(LineFilter { op, alternatives });
        }
    }

    fn pipe_stage(&mut self) -> Result<Stage, ParseError> {
        self.ws();
        let at = self.pos;
        let Some(word) = self.peek_ident() else {
            if self.peek() == Some(b'(') {
                return Ok(Stage::LabelFilter(self.label_filter()?));
            }
            return Err(self.err(
                at,
                "expected a parser (json, logfmt, regexp, pattern), line_format, drop, keep or a label filter after '|'",
            ));
        };
        match word {
            "json" => {
                self.pos += word.len();
                let params = self.extraction_params(true)?;
                let mut out = Vec::new();
                for (name, path_at, expr) in params {
                    out.push((name, self.json_path(path_at, &expr)?));
                }
                Ok(Stage::Json(out))
            }
            "logfmt" => {
                self.pos += word.len();
                let (mut strict, mut keep_empty) = (false, false);
                loop {
                    if self.eat("--strict") {
                        strict = true;
                    } else if self.eat("--keep-empty") {
                        keep_empty = true;
                    } else if self.starts("--") {
                        return Err(self.err(self.pos, "unknown logfmt flag: use --strict or --keep-empty"));
                    } else {
                        break;
                    }
                }
                let params = self.extraction_params(false)?.into_iter().map(|(n, _, e)| (n, e)).collect();
                Ok(Stage::Logfmt { strict, keep_empty, params })
            }
            "regexp" => {
                self.pos += word.len();
                let (at, pattern) = self.string("after regexp")?;
                let re = self.regex(at, &pattern)?;
                let mut names = Vec::new();
                for (i, name) in re.capture_names().enumerate() {
                    if let Some(name) = name {
                        if !osprey_protocol::loki_labels::is_valid_label_name(name) {
                            return Err(self.err(at, format!("invalid extracted label name '{name}'")));
                        }
                        names.push((i, name.to_string()));
                    }
                }
                if names.is_empty() {
                    return Err(self.err(at, "at least one named capture must be supplied: (?P<name>...)"));
                }
                Ok(Stage::Regexp { re, names })
            }
            "pattern" => {
                self.pos += word.len();
                let (at, src) = self.string("after pattern")?;
                Pattern::new(&src).map(Stage::Pattern).map_err(|e| self.err(at, format!("invalid pattern: {e}")))
            }
            "line_format" => {
                self.pos += word.len();
                let (at, src) = self.string("after line_format")?;
                Template::parse(&src)
                    .map(Stage::LineFormat)
                    .map_err(|e| self.err(at, format!("invalid line_format template: {e}")))
            }
            "drop" | "keep" => {
                self.pos += word.len();
                let refs = self.label_refs()?;
                Ok(if word == "drop" { Stage::Drop(refs) } else { Stage::Keep(refs) })
            }
            w if UNSUPPORTED_STAGES.contains(&w) => Err(self.err(
                at,
                format!("'| {w}' is not supported; stages are json, logfmt, regexp, pattern, line_format, drop, keep and label filters"),
            )),
            _ => Ok(Stage::LabelFilter(self.label_filter()?)),
        }
    }

    /// `name="expr", name2, ...` after json or logfmt; each entry is (label, offset, expression).
    fn extraction_params(&mut self, json: bool) -> Result<Vec<(String, usize, String)>, ParseError> {
        let mut out = Vec::new();
        loop {
            let save = self.pos;
            let Some(name) = self.ident() else { break };
            let at = self.pos;
            if self.eat("=") && !self.starts("=") && !self.starts("~") {
                let (at, expr) = self.string("as the field to extract")?;
                out.push((name.to_string(), at, expr));
            } else {
                self.pos = at;
                // A bare name: extract the field of that name. Anything else (a comparison) means
                // this was not a parameter list but a label filter with no '|' before it.
                if self.starts("=") || self.starts("!") || self.starts(">") || self.starts("<") {
                    self.pos = save;
                    return Err(self.err(
                        save,
                        format!("expected '|' before a label filter after {}", if json { "json" } else { "logfmt" }),
                    ));
                }
                out.push((name.to_string(), save, name.to_string()));
            }
            if !self.eat(",") {
                break;
            }
        }
        Ok(out)
    }

    fn json_path(&self, at: usize, expr: &str) -> Result<JsonPath, ParseError> {
        let b = expr.as_bytes();
        let mut i = 0;
        let mut path = Vec::new();
        let bad = |why: &str| self.err(at, format!("invalid JSON path {expr:?}: {why}"));
        while i < b.len() {
            match b[i] {
                b'.' if !path.is_empty() => i += 1,
                b'[' => {
                    let end = expr[i..].find(']').ok_or_else(|| bad("missing ']'"))? + i;
                    let inner = expr[i + 1..end].trim();
                    if inner.starts_with('"') {
                        let (key, next) = parse_string(inner, 0).map_err(|e| bad(&e.message))?;
                        if next != inner.len() {
                            return Err(bad("unexpected text after a quoted key"));
                        }
                        path.push(JsonStep::Key(key));
                    } else {
                        let n = inner.parse::<usize>().map_err(|_| bad("an index must be a non-negative integer"))?;
                        path.push(JsonStep::Index(n));
                    }
                    i = end + 1;
                    continue;
                }
                _ => {}
            }
            let start = i;
            while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                i += 1;
            }
            if i == start {
                return Err(bad("empty field name"));
            }
            path.push(JsonStep::Key(expr[start..i].to_string()));
        }
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        Ok(path)
    }

    fn label_refs(&mut self) -> Result<Vec<LabelRef>, ParseError> {
        let mut out = Vec::new();
        loop {
            self.ws();
            let at = self.pos;
            let Some(name) = self.ident() else {
                return Err(self.err(at, "expected a label name"));
            };
            let op = self.match_op();
            let matcher = match op {
                Some(op) => {
                    let (vat, value) = self.string("as the label value")?;
                    Some(Matcher::new(name, op, value).map_err(|e| self.err(vat, e))?)
                }
                None => None,
            };
            out.push(LabelRef { name: name.to_string(), matcher });
            if !self.eat(",") {
                return Ok(out);
            }
        }
    }

    fn match_op(&mut self) -> Option<MatchOp> {
        if self.eat("=~") {
            Some(MatchOp::Regex)
        } else if self.eat("!~") {
            Some(MatchOp::NotRegex)
        } else if self.eat("!=") {
            Some(MatchOp::NotEqual)
        } else if self.starts("=") && !self.starts("==") {
            self.pos += 1;
            Some(MatchOp::Equal)
        } else {
            None
        }
    }

    fn label_filter(&mut self) -> Result<LabelFilter, ParseError> {
        let mut lhs = self.label_filter_and()?;
        loop {
            let save = self.pos;
            if self.ident() == Some("or") {
                let rhs = self.label_filter_and()?;
                lhs = LabelFilter::Or(Box::new(lhs), Box::new(rhs));
            } else {
                self.pos = save;
                return Ok(lhs);
            }
        }
    }

    fn label_filter_and(&mut self) -> Result<LabelFilter, ParseError> {
        let mut lhs = self.label_filter_primary()?;
        loop {
            let save = self.pos;
            if self.eat(",") {
            } else if self.peek_ident() == Some("and") {
                self.pos += 3;
            } else if self.peek() == Some(b'(')
                || self.peek_ident().is_some_and(|w| w != "or" && w != "and" && w != "offset")
            {
                // Juxtaposition: `| a="x" b="y"` means and.
            } else {
                self.pos = save;
                return Ok(lhs);
            }
            let rhs = self.label_filter_primary()?;
            lhs = LabelFilter::And(Box::new(lhs), Box::new(rhs));
        }
    }

    fn label_filter_primary(&mut self) -> Result<LabelFilter, ParseError> {
        if self.eat("(") {
            let inner = self.label_filter()?;
            self.expect(")", "to close the label filter group")?;
            return Ok(inner);
        }
        self.ws();
        let at = self.pos;
        let Some(name) = self.ident() else {
            return Err(self.err(at, "expected a label filter like level=\"error\" or status >= 400"));
        };
        self.ws();
        let op_at = self.pos;
        let ops = ["=~", "!~", "!=", "==", ">=", "<=", ">", "<", "="];
        let Some(op) = ops.iter().find(|o| self.src[self.pos..].starts_with(**o)).copied() else {
            return Err(self.err(op_at, format!("expected a comparison after {name}: =, !=, =~, !~, ==, >, >=, <, <=")));
        };
        self.pos += op.len();
        self.ws();
        if matches!(self.b.get(self.pos), Some(b'"' | b'`')) {
            let (vat, value) = self.string("")?;
            let mop = match op {
                "=" | "==" => MatchOp::Equal,
                "!=" => MatchOp::NotEqual,
                "=~" => MatchOp::Regex,
                "!~" => MatchOp::NotRegex,
                _ => {
                    return Err(self.err(
                        op_at,
                        format!("'{op}' compares numbers: give a number, duration or size, not a string"),
                    ));
                }
            };
            return Matcher::new(name, mop, value).map(LabelFilter::String).map_err(|e| self.err(vat, e));
        }
        let cmp = match op {
            "=" | "==" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            _ => return Err(self.err(op_at, format!("'{op}' needs a quoted regex"))),
        };
        let vat = self.pos;
        let mut end = vat;
        if end < self.b.len() && matches!(self.b[end], b'-' | b'+') {
            end += 1;
        }
        while end < self.b.len() && (self.b[end].is_ascii_alphanumeric() || self.b[end] == b'.' || self.b[end] >= 0x80)
        {
            end += 1;
        }
        let token = &self.src[vat..end];
        if token.is_empty() || token == "-" || token == "+" {
            return Err(self.err(
                vat,
                format!("expected a value after {name}{op}: a quoted string, a number, a duration or a size"),
            ));
        }
        self.pos = end;
        let name = name.to_string();
        if let Some(value) = parse_go_float(token) {
            return Ok(LabelFilter::Number { name, op: cmp, value });
        }
        if let Some(nanos) = parse_go_duration(token) {
            return Ok(LabelFilter::Duration { name, op: cmp, nanos });
        }
        if let Some(bytes) = parse_bytes(token) {
            return Ok(LabelFilter::Bytes { name, op: cmp, bytes });
        }
        Err(self
            .err(vat, format!("invalid value {token:?}: expected a number (5.2), a duration (250ms) or a size (20MB)")))
    }

    // ---- metric queries ----

    fn binary(&mut self, min_prec: u8) -> Result<MetricExpr, ParseError> {
        let mut lhs = self.primary()?;
        loop {
            let (op, prec) = match self.peek() {
                Some(b'+') => (BinOp::Add, 1),
                Some(b'-') => (BinOp::Sub, 1),
                Some(b'*') => (BinOp::Mul, 2),
                Some(b'/') => (BinOp::Div, 2),
                Some(b'%') => (BinOp::Mod, 2),
                Some(b'^') => (BinOp::Pow, 3),
                _ => return Ok(lhs),
            };
            if prec < min_prec {
                return Ok(lhs);
            }
            self.pos += 1;
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.binary(next_min)?;
            lhs = MetricExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
    }

    fn number(&mut self) -> Option<f64> {
        self.ws();
        let start = self.pos;
        let mut end = start;
        if end < self.b.len() && matches!(self.b[end], b'-' | b'+') {
            end += 1;
        }
        while end < self.b.len() && (self.b[end].is_ascii_digit() || self.b[end] == b'.') {
            end += 1;
        }
        if end < self.b.len() && matches!(self.b[end], b'e' | b'E') {
            let mut e = end + 1;
            if e < self.b.len() && matches!(self.b[e], b'-' | b'+') {
                e += 1;
            }
            if e < self.b.len() && self.b[e].is_ascii_digit() {
                end = e;
                while end < self.b.len() && self.b[end].is_ascii_digit() {
                    end += 1;
                }
            }
        }
        let v = self.src[start..end].parse::<f64>().ok()?;
        self.pos = end;
        Some(v)
    }

    fn primary(&mut self) -> Result<MetricExpr, ParseError> {
        self.ws();
        let at = self.pos;
        match self.b.get(at) {
            None => return Err(self.err(at, "unexpected end of query: expected an expression")),
            Some(b'(') => {
                self.pos += 1;
                let e = self.binary(0)?;
                self.expect(")", "to close the parenthesis")?;
                return Ok(e);
            }
            Some(b'{') => {
                return Err(self.err(
                    at,
                    "a log query cannot be used here: wrap it in a range aggregation like count_over_time({...}[5m])",
                ));
            }
            Some(c) if c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+') => {
                return self.number().map(MetricExpr::Number).ok_or_else(|| self.err(at, "expected a number"));
            }
            _ => {}
        }
        let Some(word) = self.ident() else {
            return Err(self.err(at, format!("expected a metric expression ({SUPPORTED})")));
        };
        match word {
            "vector" => {
                self.expect("(", "after vector")?;
                let nat = self.pos;
                let v = self.number().ok_or_else(|| self.err(nat, "vector() takes a number"))?;
                self.expect(")", "to close vector(")?;
                Ok(MetricExpr::VectorOf(v))
            }
            "sum" => self.aggregation(AggOp::Sum),
            "avg" => self.aggregation(AggOp::Avg),
            "min" => self.aggregation(AggOp::Min),
            "max" => self.aggregation(AggOp::Max),
            "count" => self.aggregation(AggOp::Count),
            "topk" => self.aggregation(AggOp::Topk),
            "bottomk" => self.aggregation(AggOp::Bottomk),
            "count_over_time" => self.range_agg(RangeFn::CountOverTime),
            "rate" => self.range_agg(RangeFn::Rate),
            "bytes_over_time" => self.range_agg(RangeFn::BytesOverTime),
            "bytes_rate" => self.range_agg(RangeFn::BytesRate),
            w if UNSUPPORTED_FUNCS.contains(&w) => Err(self.err(at, format!("{w} is not supported ({SUPPORTED})"))),
            w => Err(self.err(at, format!("unknown function or keyword {w:?} ({SUPPORTED})"))),
        }
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let save = self.pos;
        let without = match self.ident() {
            Some("by") => false,
            Some("without") => true,
            _ => {
                self.pos = save;
                return Ok(None);
            }
        };
        self.expect("(", "after by/without")?;
        let mut labels = Vec::new();
        if !self.eat(")") {
            loop {
                self.ws();
                let at = self.pos;
                let name = self.ident().ok_or_else(|| self.err(at, "expected a label name in the grouping"))?;
                labels.push(name.to_string());
                if self.eat(")") {
                    break;
                }
                self.expect(",", "or ')' in the grouping")?;
            }
        }
        Ok(Some(Grouping { without, labels }))
    }

    fn aggregation(&mut self, op: AggOp) -> Result<MetricExpr, ParseError> {
        let before = self.grouping()?;
        self.expect("(", &format!("after {}", op.name()))?;
        let param = if matches!(op, AggOp::Topk | AggOp::Bottomk) {
            self.ws();
            let at = self.pos;
            let k = self
                .number()
                .ok_or_else(|| self.err(at, format!("{} needs a number first: {}(5, ...)", op.name(), op.name())))?;
            if k < 1.0 || k.fract() != 0.0 || k > 1e9 {
                return Err(self.err(at, format!("{}: k must be a positive integer", op.name())));
            }
            self.expect(",", &format!("after the k of {}", op.name()))?;
            Some(k as usize)
        } else {
            None
        };
        self.ws();
        let inner_at = self.pos;
        let inner = self.binary(0)?;
        if inner.is_scalar() {
            return Err(self.err(inner_at, format!("{} needs a vector, not a number", op.name())));
        }
        self.expect(")", &format!("to close {}(", op.name()))?;
        let after_at = self.pos;
        let after = self.grouping()?;
        let grouping = match (before, after) {
            (Some(_), Some(_)) => return Err(self.err(after_at, "grouping given twice: use by/without once")),
            (Some(g), None) | (None, Some(g)) => g,
            (None, None) => Grouping::default(),
        };
        Ok(MetricExpr::Vector(VectorAgg { op, param, grouping, inner: Box::new(inner) }))
    }

    fn range(&mut self) -> Result<i64, ParseError> {
        self.expect("[", "for the range, like [5m]")?;
        let at = self.pos;
        let end =
            self.src[at..].find(']').map(|i| i + at).ok_or_else(|| self.err(at, "missing ']' after the range"))?;
        let text = self.src[at..end].trim();
        let ns = parse_prom_duration(text).filter(|d| *d > 0).ok_or_else(|| {
            self.err(at, format!("invalid range {text:?}: use a positive duration like 30s, 5m, 1h30m"))
        })?;
        self.pos = end + 1;
        Ok(ns)
    }

    fn range_agg(&mut self, func: RangeFn) -> Result<MetricExpr, ParseError> {
        self.expect("(", &format!("after {}", func.name()))?;
        self.ws();
        if self.b.get(self.pos) != Some(&b'{') {
            return Err(self.err(
                self.pos,
                format!("{} needs a log query and a range: {}({{job=\"x\"}}[5m])", func.name(), func.name()),
            ));
        }
        let selector = self.selector()?;
        let mut stages = self.stages()?;
        let range_ns = self.range()?;
        // `{...}[5m] |= "x"`: the pipeline may also follow the range.
        if stages.is_empty() {
            stages = self.stages()?;
        }
        let offset_ns = if self.peek_ident() == Some("offset") {
            self.pos += "offset".len();
            self.ws();
            let at = self.pos;
            let end = self.src[at..].find(|c: char| !c.is_ascii_alphanumeric()).map_or(self.src.len(), |i| i + at);
            let text = &self.src[at..end];
            let ns = parse_prom_duration(text)
                .ok_or_else(|| self.err(at, format!("invalid offset {text:?}: use a duration like 1h")))?;
            self.pos = end;
            ns
        } else {
            0
        };
        self.expect(")", &format!("to close {}(", func.name()))?;
        let save = self.pos;
        if matches!(self.ident(), Some("by" | "without")) {
            return Err(self.err(save, format!("grouping goes on an aggregation: sum by (...) ({}(...))", func.name())));
        }
        self.pos = save;
        Ok(MetricExpr::Range(RangeAgg { func, query: LogQuery { selector, stages }, range_ns, offset_ns }))
    }
}

/// A Prometheus duration: `5m`, `1h30m`, `250ms` (units ms, s, m, h, d, w, y), in nanoseconds.
pub fn parse_prom_duration(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut i = 0;
    let mut total: i64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n: i64 = s[start..i].parse().ok()?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit: i64 = match &s[ustart..i] {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            "y" => 31_536_000_000_000_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

/// Go's `strconv.ParseFloat` for the values label filters compare.
pub fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.strip_prefix('+').unwrap_or(s);
    let lower = t.trim_start_matches('-').to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return t.parse::<f64>().ok();
    }
    if !t.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+')) {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Go's `time.ParseDuration`: `1.5s`, `-2h45m`, `300us`, in nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * unit;
    }
    let ns = total.round() as i128;
    Some(if neg { -ns } else { ns })
}

/// go-humanize's `ParseBytes`: `20MB` (SI), `1.5KiB` (IEC), `1024` (bytes), case-insensitive.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',')).unwrap_or(t.len());
    let num: f64 = t[..split].replace(',', "").parse().ok()?;
    let unit = t[split..].trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        _ => return None,
    };
    let v = num * mult;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}
