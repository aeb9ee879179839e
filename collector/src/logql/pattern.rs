//! `| pattern "<ip> - - [<_>] \"<method> <path> <_>\" <status>"`: Loki's pattern parser.
//!
//! A pattern is literals and captures (`<name>`, or `<_>` to skip). Matching is greedy-free and
//! linear: a leading literal must start the line; each capture then takes the text up to the
//! first occurrence of the literal that follows it. If that literal is missing, the capture takes
//! the rest of the line and matching stops there (captures after it are not set). A trailing
//! capture takes the rest of the line. These are Loki's semantics, kept so the same pattern
//! extracts the same labels.

use memchr::memmem;

#[derive(Clone, Debug)]
enum Node {
    Literal(Box<memmem::Finder<'static>>),
    /// `None` for `<_>`.
    Capture(Option<String>),
}

#[derive(Clone, Debug)]
pub struct Pattern {
    nodes: Vec<Node>,
}

fn is_capture_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Pattern {
    /// Compiles a pattern; the error says what is wrong with it.
    pub fn new(src: &str) -> Result<Pattern, String> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut literal = String::new();
        let mut rest = src;
        while !rest.is_empty() {
            if rest.starts_with('<')
                && let Some(end) = rest.find('>')
                && is_capture_name(&rest[1..end])
            {
                let name = &rest[1..end];
                if !literal.is_empty() {
                    nodes.push(Node::Literal(Box::new(memmem::Finder::new(literal.as_bytes()).into_owned())));
                    literal.clear();
                }
                if matches!(nodes.last(), Some(Node::Capture(_))) {
                    return Err(format!(
                        "found consecutive captures before <{name}>: put a literal between two captures"
                    ));
                }
                nodes.push(Node::Capture((name != "_").then(|| name.to_string())));
                rest = &rest[end + 1..];
                continue;
            }
            let c = rest.chars().next().unwrap_or('\0');
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !literal.is_empty() {
            nodes.push(Node::Literal(Box::new(memmem::Finder::new(literal.as_bytes()).into_owned())));
        }
        let names: Vec<&str> = nodes
            .iter()
            .filter_map(|n| match n {
                Node::Capture(Some(name)) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        if names.is_empty() {
            return Err("at least one named capture (<name>) is required".into());
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("duplicate capture name <{n}>"));
            }
        }
        Ok(Pattern { nodes })
    }

    /// Calls `found(name, value)` for each named capture the line yields.
    pub fn captures<'p, 'l>(&'p self, line: &'l str, mut found: impl FnMut(&'p str, &'l str)) {
        if line.is_empty() || self.nodes.is_empty() {
            return;
        }
        let mut input = line;
        let mut nodes = &self.nodes[..];
        if let Node::Literal(lit) = &nodes[0] {
            if !input.as_bytes().starts_with(lit.needle()) {
                return;
            }
            input = &input[lit.needle().len()..];
            nodes = &nodes[1..];
        }
        while let Some(Node::Capture(name)) = nodes.first() {
            let Some(Node::Literal(lit)) = nodes.get(1) else {
                // Ends on a capture: it takes the rest.
                if let Some(name) = name {
                    found(name, input);
                }
                return;
            };
            match lit.find(input.as_bytes()) {
                None => {
                    if let Some(name) = name {
                        found(name, input);
                    }
                    return;
                }
                Some(i) => {
                    if let Some(name) = name {
                        found(name, &input[..i]);
                    }
                    input = &input[i + lit.needle().len()..];
                    nodes = &nodes[2..];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &str, line: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        Pattern::new(p).unwrap().captures(line, |k, v| out.push((k.to_string(), v.to_string())));
        out
    }

    #[test]
    fn extracts_like_loki() {
        let line = r#"127.0.0.1 - - [10/Oct/2000:13:55:36] "GET /a.gif HTTP/1.0" 200 2326"#;
        let got = run(r#"<ip> - - [<_>] "<method> <path> <_>" <status> <size>"#, line);
        let want = [("ip", "127.0.0.1"), ("method", "GET"), ("path", "/a.gif"), ("status", "200"), ("size", "2326")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        // A missing literal: the capture takes the rest and matching stops.
        assert_eq!(run("<a> x <b>", "hello world"), vec![("a".into(), "hello world".into())]);
        // A leading literal must start the line.
        assert!(run("GET <path>", "POST /x").is_empty());
    }

    #[test]
    fn refuses_bad_patterns() {
        assert!(Pattern::new("no captures").unwrap_err().contains("at least one"));
        assert!(Pattern::new("<a><b>").unwrap_err().contains("consecutive"));
        assert!(Pattern::new("<a> <a>").unwrap_err().contains("duplicate"));
        assert!(Pattern::new("<_> x").unwrap_err().contains("at least one"));
        // Not a capture: a literal '<'.
        assert_eq!(run("<1> <a>", "<1> z"), vec![("a".into(), "z".into())]);
    }
}
