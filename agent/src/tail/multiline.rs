//! Joining the lines of one event (a stack trace, a traceback, a panic) before they are shipped.
//!
//! A line either starts a new event or continues the current one, decided by one regex: a start
//! pattern (anything else continues) or a continuation pattern (anything else starts). Presets
//! are continuation patterns for the usual runtimes. An event is held until the next start line,
//! until `max_lines`, or until `flush_timeout` passes without a new line, so the last event of a
//! quiet file is not held back forever. Its file position is that of its last line, so a
//! checkpoint never falls inside a held event: a restart re-reads and re-joins it.

use osprey_config::agent::{Multiline, MultilinePreset};
use regex::Regex;
use std::time::{Duration, Instant};

/// Java: `\tat com.x.Y.z(Y.java:1)`, `Caused by: ...`, `\t... 12 more`, `Suppressed: ...`,
/// and any other indented line.
const JAVA: &str = r"^(?:[ \t]+\S|Caused by:|Suppressed:|\s*\.\.\. \d+ (?:more|common frames omitted))";
/// Python: the `Traceback` header, indented frames and source lines, chained-exception
/// sentences, and the final `SomeError: message` (or a bare `KeyboardInterrupt`).
const PYTHON: &str = r"^(?:[ \t]+\S|Traceback \(most recent call last\):|During handling of the above exception|The above exception was the direct cause|$|[A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt|Iteration)\b(?::|$))";
/// Go: blank lines, `goroutine N [state]:`, function lines `pkg.fn(args)`, indented file lines,
/// `created by ...`, `[signal ...`, `exit status N`.
const GO: &str = r"^(?:$|[ \t]+\S|goroutine \d+ \[|created by |\[signal |exit status \d+|[\w./*()\-]+\(.*\)$)";

#[derive(Debug)]
pub enum Rule {
    Start(Regex),
    Continuation(Regex),
}

impl Rule {
    /// The rule a source's config asks for; `None` when no joining is configured.
    pub fn from_config(m: &Multiline) -> Result<Option<Rule>, regex::Error> {
        let preset = match m.preset {
            MultilinePreset::None => None,
            MultilinePreset::Java => Some(JAVA),
            MultilinePreset::Python => Some(PYTHON),
            MultilinePreset::Go => Some(GO),
        };
        Ok(if let Some(p) = preset {
            Some(Rule::Continuation(Regex::new(p)?))
        } else if !m.start_pattern.is_empty() {
            Some(Rule::Start(Regex::new(&m.start_pattern)?))
        } else if !m.continuation_pattern.is_empty() {
            Some(Rule::Continuation(Regex::new(&m.continuation_pattern)?))
        } else {
            None
        })
    }

    fn continues(&self, line: &str) -> bool {
        match self {
            Rule::Start(re) => !re.is_match(line),
            Rule::Continuation(re) => re.is_match(line),
        }
    }
}

/// A joined event ready to ship.
pub struct Event {
    pub text: String,
    /// File offset just past its last line.
    pub end: u64,
    /// It was cut at `max_bytes`.
    pub truncated: bool,
}

/// Per-file joining state.
#[derive(Debug)]
pub struct Joiner {
    text: String,
    lines: usize,
    end: u64,
    truncated: bool,
    last_line_at: Instant,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
}

impl Joiner {
    pub fn new(m: &Multiline, max_bytes: usize) -> Self {
        Joiner {
            text: String::new(),
            lines: 0,
            end: 0,
            truncated: false,
            last_line_at: Instant::now(),
            max_lines: m.max_lines.max(1),
            max_bytes,
            timeout: m.flush_timeout.get(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Bytes held.
    pub fn pending(&self) -> usize {
        self.text.len()
    }

    /// Adds one line; hands completed events (oldest first) to `out`.
    pub fn push(
        &mut self,
        rule: &Rule,
        line: String,
        end: u64,
        truncated: bool,
        now: Instant,
        mut out: impl FnMut(Event),
    ) {
        self.last_line_at = now;
        if self.lines > 0
            && !rule.continues(&line)
            && let Some(ev) = self.take()
        {
            out(ev);
        }
        if self.lines == 0 {
            self.text = line;
        } else {
            let room = self.max_bytes.saturating_sub(self.text.len());
            if room > line.len() {
                self.text.push('\n');
                self.text.push_str(&line);
            } else {
                if room > 1 {
                    self.text.push('\n');
                    let mut cut = room - 1;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    self.text.push_str(&line[..cut]);
                }
                self.truncated = true;
            }
        }
        self.truncated |= truncated;
        self.lines += 1;
        self.end = end;
        if self.lines >= self.max_lines
            && let Some(ev) = self.take()
        {
            out(ev);
        }
    }

    /// The held event, if `timeout` passed since its last line.
    pub fn flush_due(&mut self, now: Instant) -> Option<Event> {
        if self.lines > 0 && now.duration_since(self.last_line_at) >= self.timeout { self.take() } else { None }
    }

    /// When the held event will be due, if one is held.
    pub fn due_at(&self) -> Option<Instant> {
        (self.lines > 0).then(|| self.last_line_at + self.timeout)
    }

    /// Ships what is held now (a rotated file that ended).
    pub fn take(&mut self) -> Option<Event> {
        if self.lines == 0 {
            return None;
        }
        self.lines = 0;
        let truncated = std::mem::take(&mut self.truncated);
        Some(Event { text: std::mem::take(&mut self.text), end: self.end, truncated })
    }

    /// Forgets what is held (the file was truncated).
    pub fn reset(&mut self) {
        self.text = String::new();
        self.lines = 0;
        self.truncated = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(m: &Multiline, lines: &[&str]) -> Vec<String> {
        let rule = Rule::from_config(m).unwrap().unwrap();
        let mut j = Joiner::new(m, 1 << 20);
        let mut out = Vec::new();
        let now = Instant::now();
        for (i, l) in lines.iter().enumerate() {
            j.push(&rule, l.to_string(), i as u64, false, now, |e| out.push(e.text));
        }
        out.extend(j.take().map(|e| e.text));
        out
    }

    fn preset(p: MultilinePreset) -> Multiline {
        Multiline { preset: p, ..Multiline::default() }
    }

    #[test]
    fn java_stack_trace() {
        let out = join(
            &preset(MultilinePreset::Java),
            &[
                "2026-11-26 ERROR boom",
                "java.lang.IllegalStateException: bad",
                "\tat com.x.A.b(A.java:10)",
                "\tat com.x.A.main(A.java:3)",
                "Caused by: java.io.IOException: disk",
                "\t... 2 more",
                "2026-11-26 INFO next",
            ],
        );
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out[1].starts_with("java.lang.IllegalStateException") && out[1].ends_with("... 2 more"));
        assert_eq!(out[2], "2026-11-26 INFO next");
    }

    #[test]
    fn python_traceback() {
        let out = join(
            &preset(MultilinePreset::Python),
            &[
                "ERROR:root:failed",
                "Traceback (most recent call last):",
                "  File \"x.py\", line 1, in <module>",
                "    foo()",
                "ValueError: bad value",
                "INFO:root:next",
            ],
        );
        assert_eq!(
            out,
            vec![
                "ERROR:root:failed\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    foo()\nValueError: bad value",
                "INFO:root:next"
            ]
        );
    }

    #[test]
    fn go_panic() {
        let out = join(
            &preset(MultilinePreset::Go),
            &[
                "panic: runtime error: index out of range [3] with length 3",
                "",
                "goroutine 1 [running]:",
                "main.main()",
                "\t/tmp/x/main.go:8 +0x1d",
                "exit status 2",
                "2026/11/26 08:00:00 next",
            ],
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].ends_with("exit status 2"));
    }

    #[test]
    fn start_pattern_max_lines_and_timeout() {
        let m = Multiline { start_pattern: r"^\d{4}-".into(), max_lines: 3, ..Multiline::default() };
        let out = join(&m, &["2026- a", "x", "y", "z", "2026- b"]);
        assert_eq!(out, vec!["2026- a\nx\ny", "z", "2026- b"]);
        let rule = Rule::from_config(&m).unwrap().unwrap();
        let mut j = Joiner::new(&m, 100);
        let t0 = Instant::now();
        j.push(&rule, "2026- a".into(), 8, false, t0, |_| panic!("nothing completes yet"));
        assert!(j.flush_due(t0).is_none());
        let ev = j.flush_due(t0 + m.flush_timeout.get()).unwrap();
        assert_eq!((ev.text.as_str(), ev.end), ("2026- a", 8));
    }

    #[test]
    fn events_are_capped() {
        let m = Multiline { continuation_pattern: "^ ".into(), ..Multiline::default() };
        let rule = Rule::from_config(&m).unwrap().unwrap();
        let mut j = Joiner::new(&m, 10);
        let now = Instant::now();
        for l in ["abcdef", " ghijkl", " mn"] {
            j.push(&rule, l.into(), 0, false, now, |_| {});
        }
        let ev = j.take().unwrap();
        assert!(ev.truncated && ev.text.len() <= 10, "{:?}", ev.text);
    }
}
