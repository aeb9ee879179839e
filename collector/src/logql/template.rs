//! `| line_format "..."`: the subset of Go's text/template that log lines need.
//!
//! Supported: literal text; actions `{{ pipeline }}` with `{{-`/`-}}` whitespace trimming and
//! `{{/* comments */}}`; operands `.label` (a missing label is the empty string, as Loki's
//! `missingkey=zero`), string (`"..."`, `` `...` ``) and number literals, `__line__` and
//! `__timestamp__`; pipelines `a | f x` (the left value is passed as the last argument) and
//! these functions, with Loki's argument orders:
//!
//! - case: `ToUpper`, `ToLower`, `upper`, `lower`, `title`
//! - trimming: `TrimSpace`, `trim`, `Trim s cutset`, `TrimLeft`, `TrimRight`, `TrimPrefix s p`,
//!   `TrimSuffix s p`, `trimAll cutset s`, `trimPrefix p s`, `trimSuffix p s`
//! - replacing: `Replace s old new n`, `replace old new s`, `regexReplaceAll re s repl`,
//!   `regexReplaceAllLiteral re s repl`
//! - slicing: `trunc n s`, `substr start end s`, `repeat n s`
//! - tests: `contains sub s`, `hasPrefix p s`, `hasSuffix p s`
//! - other: `default fallback value`, `urlencode`, `urldecode`, `unixEpochMillis t`,
//!   `unixEpochNanos t`, `unixEpoch t`, integer `add`, `sub`, `mul`, `div`, `mod`
//!
//! Control structures (`if`, `range`, `with`), variables and `printf` are refused at parse
//! time with a message naming them, rather than half-implemented.

use regex::Regex;

#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
enum Part {
    Text(String),
    Action(Vec<Command>),
}

#[derive(Clone, Debug)]
struct Command {
    func: Option<Func>,
    args: Vec<Operand>,
}

#[derive(Clone, Debug)]
enum Operand {
    Field(String),
    Str(String),
    Int(i64),
    Float(f64),
    Line,
    Timestamp,
}

#[derive(Clone, Debug)]
enum Func {
    Simple(&'static str),
    /// Functions whose first argument is a regex, compiled once.
    Regex {
        name: &'static str,
        re: Regex,
    },
}

/// Functions, with how many arguments each takes.
const FUNCS: &[(&str, usize)] = &[
    ("ToUpper", 1),
    ("ToLower", 1),
    ("upper", 1),
    ("lower", 1),
    ("title", 1),
    ("TrimSpace", 1),
    ("trim", 1),
    ("Trim", 2),
    ("TrimLeft", 2),
    ("TrimRight", 2),
    ("TrimPrefix", 2),
    ("TrimSuffix", 2),
    ("trimAll", 2),
    ("trimPrefix", 2),
    ("trimSuffix", 2),
    ("Replace", 4),
    ("replace", 3),
    ("regexReplaceAll", 3),
    ("regexReplaceAllLiteral", 3),
    ("trunc", 2),
    ("substr", 3),
    ("repeat", 2),
    ("contains", 2),
    ("hasPrefix", 2),
    ("hasSuffix", 2),
    ("default", 2),
    ("urlencode", 1),
    ("urldecode", 1),
    ("unixEpochMillis", 1),
    ("unixEpochNanos", 1),
    ("unixEpoch", 1),
    ("add", 2),
    ("sub", 2),
    ("mul", 2),
    ("div", 2),
    ("mod", 2),
];

const UNSUPPORTED: &[&str] = &["if", "else", "end", "range", "with", "define", "template", "block", "printf", "len"];

/// A value while a pipeline runs.
#[derive(Clone, Debug)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Time(i64),
}

impl Val {
    fn into_string(self) -> String {
        match self {
            Val::Str(s) => s,
            Val::Int(i) => i.to_string(),
            Val::Float(f) => format_go_float(f),
            Val::Bool(b) => b.to_string(),
            Val::Time(ns) => format_go_time(ns),
        }
    }

    fn as_int(&self) -> Result<i64, String> {
        match self {
            Val::Int(i) => Ok(*i),
            Val::Float(f) => Ok(*f as i64),
            Val::Str(s) => s.trim().parse::<i64>().map_err(|_| format!("cannot use {s:?} as an integer")),
            Val::Bool(b) => Ok(*b as i64),
            Val::Time(ns) => Ok(*ns),
        }
    }
}

fn format_go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{f}")
    }
}

/// Go's default `time.Time` formatting, in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn format_go_time(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(ts) => {
            let frac = ns.rem_euclid(1_000_000_000);
            let mut s = ts.strftime("%Y-%m-%d %H:%M:%S").to_string();
            if frac != 0 {
                let digits = format!("{frac:09}");
                s.push('.');
                s.push_str(digits.trim_end_matches('0'));
            }
            s.push_str(" +0000 UTC");
            s
        }
        Err(_) => ns.to_string(),
    }
}

impl Template {
    /// Parses a template; errors name the problem and its byte offset in the template.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut offset = 0;
        let mut trim_next_text = false;
        while !rest.is_empty() {
            let Some(open) = rest.find("{{") else {
                push_text(&mut parts, rest, trim_next_text, false);
                break;
            };
            let mut inner_start = open + 2;
            let trim_left = rest[inner_start..].starts_with("- ")
                || rest[inner_start..].starts_with("-\t")
                || rest[inner_start..].starts_with("-\n");
            if trim_left {
                inner_start += 1;
            }
            push_text(&mut parts, &rest[..open], trim_next_text, trim_left);
            let Some(close_rel) = rest[inner_start..].find("}}") else {
                return Err(format!("unclosed action at offset {}: missing '}}}}'", offset + open));
            };
            let mut inner = &rest[inner_start..inner_start + close_rel];
            trim_next_text = false;
            if inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-") {
                inner = &inner[..inner.len() - 1];
                trim_next_text = true;
            }
            let trimmed = inner.trim();
            if !(trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
                let cmds = parse_pipeline(trimmed).map_err(|e| format!("in action {{{{{trimmed}}}}}: {e}"))?;
                parts.push(Part::Action(cmds));
            }
            let consumed = inner_start + close_rel + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        Ok(Template { parts })
    }

    /// Renders with `lookup` giving label values; `line` and `ts_ns` feed `__line__` and
    /// `__timestamp__`. An error (a function failing at run time) says why.
    pub fn render<'a>(
        &self,
        lookup: impl Fn(&str) -> Option<&'a str>,
        line: &str,
        ts_ns: i64,
        out: &mut String,
    ) -> Result<(), String> {
        out.clear();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Action(cmds) => {
                    let mut prev: Option<Val> = None;
                    for cmd in cmds {
                        prev = Some(run_command(cmd, prev, &lookup, line, ts_ns)?);
                    }
                    if let Some(v) = prev {
                        out.push_str(&v.into_string());
                    }
                }
            }
        }
        Ok(())
    }
}

fn push_text(parts: &mut Vec<Part>, text: &str, trim_start: bool, trim_end: bool) {
    let mut t = text;
    if trim_start {
        t = t.trim_start();
    }
    if trim_end {
        t = t.trim_end();
    }
    if !t.is_empty() {
        parts.push(Part::Text(t.to_string()));
    }
}

fn parse_pipeline(src: &str) -> Result<Vec<Command>, String> {
    let tokens = tokenize(src)?;
    if tokens.is_empty() {
        return Err("empty action".into());
    }
    let mut cmds = Vec::new();
    for group in tokens.split(|t| matches!(t, Tok::Pipe)) {
        if group.is_empty() {
            return Err("missing command around '|'".into());
        }
        let (func, args) = match &group[0] {
            Tok::Ident(name) if name != "__line__" && name != "__timestamp__" => {
                if UNSUPPORTED.contains(&name.as_str()) {
                    return Err(format!(
                        "{name:?} is not supported by line_format here: use {{{{.label}}}}, literals and functions"
                    ));
                }
                let Some(&(fname, _)) = FUNCS.iter().find(|(f, _)| f == name) else {
                    return Err(format!("function {name:?} not defined"));
                };
                (Some(fname), &group[1..])
            }
            _ => (None, group),
        };
        let mut ops = Vec::new();
        for t in args {
            ops.push(match t {
                Tok::Field(f) => Operand::Field(f.clone()),
                Tok::Str(s) => Operand::Str(s.clone()),
                Tok::Int(i) => Operand::Int(*i),
                Tok::Float(f) => Operand::Float(*f),
                Tok::Ident(n) if n == "__line__" => Operand::Line,
                Tok::Ident(n) if n == "__timestamp__" => Operand::Timestamp,
                Tok::Ident(n) => return Err(format!("function {n:?} used as an argument: wrap it in a pipeline")),
                Tok::Pipe => return Err("a '|' inside function arguments: close the call first".into()),
            });
        }
        let func = match func {
            None => {
                if ops.len() != 1 {
                    return Err("expected one value or a function call".into());
                }
                None
            }
            Some(name) => {
                let want = FUNCS.iter().find(|(f, _)| *f == name).map_or(0, |(_, n)| *n);
                let given = ops.len() + usize::from(!cmds.is_empty());
                if given != want {
                    return Err(format!("wrong number of args for {name}: want {want} got {given}"));
                }
                if name.starts_with("regexReplace") {
                    let Some(Operand::Str(pattern)) = ops.first() else {
                        return Err(format!("{name} needs a string literal regex as its first argument"));
                    };
                    let re = regex::RegexBuilder::new(pattern)
                        .size_limit(super::REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
                    Some(Func::Regex { name, re })
                } else {
                    Some(Func::Simple(name))
                }
            }
        };
        cmds.push(Command { func, args: ops });
    }
    Ok(cmds)
}

#[derive(Clone, Debug)]
enum Tok {
    Field(String),
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Pipe,
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'|' {
            out.push(Tok::Pipe);
            i += 1;
        } else if c == b'.' {
            let start = i + 1;
            i = start;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            if i == start {
                return Err("'.' alone (the whole label map) is not supported: name a label, like .level".into());
            }
            if i < b.len() && b[i] == b'.' {
                return Err("nested fields (.a.b) are not supported: labels are flat".into());
            }
            out.push(Tok::Field(src[start..i].to_string()));
        } else if c == b'"' {
            let (s, next) = crate::selector::parse_string(src, i).map_err(|e| e.message)?;
            out.push(Tok::Str(s));
            i = next;
        } else if c == b'`' {
            let (s, next) = crate::selector::parse_string(src, i).map_err(|e| e.message)?;
            out.push(Tok::Str(s));
            i = next;
        } else if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e' || b[i] == b'E') {
                i += 1;
            }
            let text = &src[start..i];
            if let Ok(n) = text.parse::<i64>() {
                out.push(Tok::Int(n));
            } else if let Ok(f) = text.parse::<f64>() {
                out.push(Tok::Float(f));
            } else {
                return Err(format!("bad number {text:?}"));
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(src[start..i].to_string()));
        } else if c == b'$' {
            return Err("template variables ($x) are not supported".into());
        } else if c == b'(' || c == b')' {
            return Err("parenthesized pipelines are not supported: chain with '|' instead".into());
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(format!("unexpected {ch:?}"));
        }
    }
    Ok(out)
}

fn run_command<'a>(
    cmd: &Command,
    prev: Option<Val>,
    lookup: &impl Fn(&str) -> Option<&'a str>,
    line: &str,
    ts_ns: i64,
) -> Result<Val, String> {
    let mut args: Vec<Val> = cmd
        .args
        .iter()
        .map(|a| match a {
            Operand::Field(f) => Val::Str(lookup(f).unwrap_or("").to_string()),
            Operand::Str(s) => Val::Str(s.clone()),
            Operand::Int(i) => Val::Int(*i),
            Operand::Float(f) => Val::Float(*f),
            Operand::Line => Val::Str(line.to_string()),
            Operand::Timestamp => Val::Time(ts_ns),
        })
        .collect();
    if let Some(p) = prev {
        if cmd.func.is_none() {
            return Err("a value cannot follow '|': use a function".into());
        }
        args.push(p);
    }
    let Some(func) = &cmd.func else {
        return args.pop().ok_or_else(|| "empty command".to_string());
    };
    let s = |i: usize| args[i].clone().into_string();
    let int = |i: usize| args[i].as_int();
    Ok(match func {
        Func::Regex { name, re } => {
            let (subject, repl) = (s(1), s(2));
            let out = if *name == "regexReplaceAllLiteral" {
                re.replace_all(&subject, regex::NoExpand(&repl)).into_owned()
            } else {
                re.replace_all(&subject, repl.as_str()).into_owned()
            };
            Val::Str(out)
        }
        Func::Simple(name) => match *name {
            "ToUpper" | "upper" => Val::Str(s(0).to_uppercase()),
            "ToLower" | "lower" => Val::Str(s(0).to_lowercase()),
            "title" => Val::Str(title(&s(0))),
            "TrimSpace" | "trim" => Val::Str(s(0).trim().to_string()),
            "Trim" => Val::Str(trim_set(&s(0), &s(1), true, true)),
            "TrimLeft" => Val::Str(trim_set(&s(0), &s(1), true, false)),
            "TrimRight" => Val::Str(trim_set(&s(0), &s(1), false, true)),
            "trimAll" => Val::Str(trim_set(&s(1), &s(0), true, true)),
            "TrimPrefix" => Val::Str(strip_prefix(&s(0), &s(1))),
            "TrimSuffix" => Val::Str(strip_suffix(&s(0), &s(1))),
            "trimPrefix" => Val::Str(strip_prefix(&s(1), &s(0))),
            "trimSuffix" => Val::Str(strip_suffix(&s(1), &s(0))),
            "Replace" => {
                let n = int(3)?;
                let (subject, old, new) = (s(0), s(1), s(2));
                Val::Str(if n < 0 { subject.replace(&old, &new) } else { subject.replacen(&old, &new, n as usize) })
            }
            "replace" => Val::Str(s(2).replace(&s(0), &s(1))),
            "trunc" => {
                let n = int(0)?;
                let chars: Vec<char> = s(1).chars().collect();
                let len = chars.len() as i64;
                Val::Str(if n < 0 && len + n > 0 {
                    chars[(len + n) as usize..].iter().collect()
                } else if n >= 0 && len > n {
                    chars[..n as usize].iter().collect()
                } else {
                    chars.iter().collect()
                })
            }
            "substr" => Val::Str(substring(int(0)?, int(1)?, &s(2))),
            "repeat" => {
                let n = int(0)?.clamp(0, 10_000) as usize;
                let v = s(1);
                if v.len().saturating_mul(n) > 1 << 20 {
                    return Err("repeat would produce more than 1 MiB".into());
                }
                Val::Str(v.repeat(n))
            }
            "contains" => Val::Bool(s(1).contains(&s(0))),
            "hasPrefix" => Val::Bool(s(1).starts_with(&s(0))),
            "hasSuffix" => Val::Bool(s(1).ends_with(&s(0))),
            "default" => {
                let empty = match &args[1] {
                    Val::Str(v) => v.is_empty(),
                    Val::Int(i) => *i == 0,
                    Val::Float(f) => *f == 0.0,
                    Val::Bool(b) => !b,
                    Val::Time(_) => false,
                };
                if empty { args[0].clone() } else { args[1].clone() }
            }
            "urlencode" => Val::Str(form_urlencoded::byte_serialize(s(0).as_bytes()).collect()),
            "urldecode" => {
                let v = s(0);
                let decoded: String = form_urlencoded::parse(format!("x={v}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                Val::Str(decoded)
            }
            "unixEpochMillis" | "unixEpochNanos" | "unixEpoch" => {
                let Val::Time(ns) = args[0] else {
                    return Err(format!("{name} needs a time (__timestamp__)"));
                };
                Val::Str(match *name {
                    "unixEpochMillis" => ns.div_euclid(1_000_000).to_string(),
                    "unixEpochNanos" => ns.to_string(),
                    _ => ns.div_euclid(1_000_000_000).to_string(),
                })
            }
            "add" => Val::Int(int(0)?.wrapping_add(int(1)?)),
            "sub" => Val::Int(int(0)?.wrapping_sub(int(1)?)),
            "mul" => Val::Int(int(0)?.wrapping_mul(int(1)?)),
            "div" | "mod" => {
                let (a, b) = (int(0)?, int(1)?);
                if b == 0 {
                    return Err("integer divide by zero".into());
                }
                Val::Int(if *name == "div" { a.wrapping_div(b) } else { a.wrapping_rem(b) })
            }
            other => return Err(format!("function {other:?} not defined")),
        },
    })
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_start = true;
    for c in s.chars() {
        if at_start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_start = !c.is_alphanumeric();
    }
    out
}

fn trim_set(s: &str, cutset: &str, left: bool, right: bool) -> String {
    let mut t = s;
    if left {
        t = t.trim_start_matches(|c| cutset.contains(c));
    }
    if right {
        t = t.trim_end_matches(|c| cutset.contains(c));
    }
    t.to_string()
}

fn strip_prefix(s: &str, p: &str) -> String {
    s.strip_prefix(p).unwrap_or(s).to_string()
}

fn strip_suffix(s: &str, p: &str) -> String {
    s.strip_suffix(p).unwrap_or(s).to_string()
}

/// Loki's `substr`: character offsets, clamped.
fn substring(start: i64, end: i64, s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let l = chars.len() as i64;
    let end = end.min(l);
    let start = start.min(l);
    if start < 0 {
        if end < 0 {
            return String::new();
        }
        return chars[..end as usize].iter().collect();
    }
    if end < 0 {
        return chars[start as usize..].iter().collect();
    }
    if start > end {
        return String::new();
    }
    chars[start as usize..end as usize].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, labels: &[(&str, &str)]) -> Result<String, String> {
        let tpl = Template::parse(t)?;
        let mut out = String::new();
        tpl.render(
            |k| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| *v),
            "the line",
            1_700_000_000_500_000_000,
            &mut out,
        )?;
        Ok(out)
    }

    #[test]
    fn renders_labels_and_functions() {
        let l = [("level", "warn"), ("msg", "  hi  ")];
        assert_eq!(render("{{.level}}: {{.msg | trim}}", &l).unwrap(), "warn: hi");
        assert_eq!(render("{{ .level | ToUpper }} {{.missing}}|", &l).unwrap(), "WARN |");
        assert_eq!(render("{{ __line__ }}", &l).unwrap(), "the line");
        assert_eq!(render(r#"{{ replace "a" "b" .level }}"#, &l).unwrap(), "wbrn");
        assert_eq!(render(r#"{{ default "none" .missing }}"#, &l).unwrap(), "none");
        assert_eq!(render(r#"{{ regexReplaceAll "(w)(a)" .level "${2}${1}" }}"#, &l).unwrap(), "awrn");
        assert_eq!(render("{{ __timestamp__ | unixEpochMillis }}", &l).unwrap(), "1700000000500");
        assert_eq!(render("{{ __timestamp__ }}", &l).unwrap(), "2023-11-14 22:13:20.5 +0000 UTC");
        assert_eq!(render("a {{- .level -}} b", &l).unwrap(), "awarnb");
        assert_eq!(render("x{{/* note */}}y", &l).unwrap(), "xy");
        assert_eq!(render("{{ trunc 2 .level }}", &l).unwrap(), "wa");
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        assert!(Template::parse("{{if .a}}x{{end}}").unwrap_err().contains("not supported"));
        assert!(Template::parse("{{.a").unwrap_err().contains("unclosed"));
        assert!(Template::parse("{{ nope .a }}").unwrap_err().contains("not defined"));
        assert!(Template::parse("{{ ToUpper }}").unwrap_err().contains("wrong number"));
        assert!(render("{{ trunc .level .level }}", &[("level", "x")]).unwrap_err().contains("integer"));
    }
}
