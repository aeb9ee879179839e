//! Prometheus relabelling (`relabel_configs`, `metric_relabel_configs`), with Prometheus'
//! semantics: regexes anchored at both ends, `$1`/`${name}` expansion in `replacement` (and in
//! `target_label` for `replace`), an empty result deletes the label, `hashmod` on the last 8
//! bytes of the MD5 of the joined source values.

use md5::Digest;
use osprey_config::scrape::{RelabelAction, RelabelConfig};
use regex::Regex;

/// A label set kept sorted by name, as Prometheus keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSet(pub Vec<(String, String)>);

impl LabelSet {
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> LabelSet {
        let mut v: Vec<(String, String)> = pairs.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        LabelSet(v)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok().map(|i| self.0[i].1.as_str())
    }

    /// Sets `name` to `value`; an empty value deletes the label.
    pub fn set(&mut self, name: &str, value: String) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = value,
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, (name.to_string(), value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            self.0.remove(i);
        }
    }
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    modulus: u64,
    replacement: String,
    action: RelabelAction,
}

/// Compiles rules; the config was validated, so an error here names the rule for the user.
pub fn compile(cfgs: &[RelabelConfig]) -> Result<Vec<Rule>, String> {
    cfgs.iter()
        .enumerate()
        .map(|(i, c)| {
            let regex = Regex::new(&format!("^(?:{})$", c.regex))
                .map_err(|e| format!("relabel rule {i}: invalid regex {:?}: {e}", c.regex))?;
            Ok(Rule {
                source_labels: c.source_labels.clone(),
                separator: c.separator.clone(),
                target_label: c.target_label.clone(),
                regex,
                modulus: c.modulus,
                replacement: c.replacement.clone(),
                action: c.action,
            })
        })
        .collect()
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Applies `rules` in order. Returns `false` when the set is dropped (`keep`, `drop`,
/// `keepequal`, `dropequal`).
pub fn relabel(rules: &[Rule], labels: &mut LabelSet) -> bool {
    for r in rules {
        if !apply(r, labels) {
            return false;
        }
    }
    true
}

fn apply(r: &Rule, labels: &mut LabelSet) -> bool {
    let joined = || {
        let mut v = String::new();
        for (i, name) in r.source_labels.iter().enumerate() {
            if i > 0 {
                v.push_str(&r.separator);
            }
            v.push_str(labels.get(name).unwrap_or(""));
        }
        v
    };
    match r.action {
        RelabelAction::Keep => r.regex.is_match(&joined()),
        RelabelAction::Drop => !r.regex.is_match(&joined()),
        RelabelAction::KeepEqual => joined() == labels.get(&r.target_label).unwrap_or(""),
        RelabelAction::DropEqual => joined() != labels.get(&r.target_label).unwrap_or(""),
        RelabelAction::Replace => {
            let value = joined();
            let Some(caps) = r.regex.captures(&value) else { return true };
            let mut target = String::new();
            caps.expand(&r.target_label, &mut target);
            if !valid_label_name(&target) {
                return true;
            }
            let mut out = String::new();
            caps.expand(&r.replacement, &mut out);
            labels.set(&target, out);
            true
        }
        RelabelAction::Lowercase => {
            labels.set(&r.target_label, joined().to_lowercase());
            true
        }
        RelabelAction::Uppercase => {
            labels.set(&r.target_label, joined().to_uppercase());
            true
        }
        RelabelAction::HashMod => {
            let digest = md5::Md5::digest(joined().as_bytes());
            let mut last = [0u8; 8];
            last.copy_from_slice(&digest[8..16]);
            let m = u64::from_be_bytes(last) % r.modulus.max(1);
            labels.set(&r.target_label, m.to_string());
            true
        }
        RelabelAction::LabelMap => {
            let mut add = Vec::new();
            for (name, value) in &labels.0 {
                if let Some(caps) = r.regex.captures(name) {
                    let mut new_name = String::new();
                    caps.expand(&r.replacement, &mut new_name);
                    add.push((new_name, value.clone()));
                }
            }
            for (n, v) in add {
                labels.set(&n, v);
            }
            true
        }
        RelabelAction::LabelDrop => {
            labels.0.retain(|(n, _)| !r.regex.is_match(n));
            true
        }
        RelabelAction::LabelKeep => {
            labels.0.retain(|(n, _)| r.regex.is_match(n));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    //! Cases from Prometheus' documentation (configuration.md, `<relabel_config>`) and its
    //! `model/relabel/relabel_test.go`, one or more per action.
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn rule(f: impl FnOnce(&mut RelabelConfig)) -> Vec<Rule> {
        let mut c = RelabelConfig::default();
        f(&mut c);
        compile(&[c]).unwrap()
    }

    #[test]
    fn replace_with_captures_and_default_replacement() {
        // relabel_test.go: regex "f(.*)", target "d", replacement "ch${1}-ch${1}".
        let mut l = ls(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        let r = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = "f(.*)".into();
            c.target_label = "d".into();
            c.replacement = "ch${1}-ch${1}".into();
        });
        assert!(relabel(&r, &mut l));
        assert_eq!(l, ls(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")]));
        // Joined sources with the separator; the regex must match the whole value.
        let mut l = ls(&[("a", "foo"), ("b", "bar")]);
        let r = rule(|c| {
            c.source_labels = vec!["a".into(), "b".into()];
            c.regex = "f(.*);(.*)r".into();
            c.target_label = "a".into();
            c.replacement = "b${1}${2}m".into();
        });
        relabel(&r, &mut l);
        assert_eq!(l.get("a"), Some("boobam"));
        let mut l = ls(&[("a", "foo")]);
        let r = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = "o".into();
            c.target_label = "x".into();
        });
        relabel(&r, &mut l);
        assert_eq!(l.get("x"), None, "anchored: 'o' does not match 'foo'");
        // The documented `__address__` rewrite: host from the address, port replaced.
        let mut l = ls(&[("__address__", "10.0.0.1:9100")]);
        let r = rule(|c| {
            c.source_labels = vec!["__address__".into()];
            c.regex = "([^:]+)(?::\\d+)?".into();
            c.target_label = "__address__".into();
            c.replacement = "${1}:80".into();
        });
        relabel(&r, &mut l);
        assert_eq!(l.get("__address__"), Some("10.0.0.1:80"));
        // An empty replacement result deletes the target label.
        let mut l = ls(&[("a", "foo"), ("b", "x")]);
        let r = rule(|c| {
            c.source_labels = vec!["missing".into()];
            c.target_label = "b".into();
        });
        relabel(&r, &mut l);
        assert_eq!(l, ls(&[("a", "foo")]));
        // The target label may itself use captures.
        let mut l = ls(&[("a", "some-name-value")]);
        let r = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = "some-([^-]+)-([^,]+)".into();
            c.target_label = "${1}".into();
            c.replacement = "${2}".into();
        });
        relabel(&r, &mut l);
        assert_eq!(l.get("name"), Some("value"));
    }

    #[test]
    fn keep_and_drop() {
        let keep = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = "f.*".into();
            c.action = RelabelAction::Keep;
        });
        assert!(relabel(&keep, &mut ls(&[("a", "foo")])));
        assert!(!relabel(&keep, &mut ls(&[("a", "boo")])));
        assert!(!relabel(&keep, &mut ls(&[])), "a missing label is the empty string");
        let drop = rule(|c| {
            c.source_labels = vec!["a".into()];
            c.regex = "f.*".into();
            c.action = RelabelAction::Drop;
        });
        assert!(!relabel(&drop, &mut ls(&[("a", "foo")])));
        assert!(relabel(&drop, &mut ls(&[("a", "boo")])));
    }

    #[test]
    fn keepequal_and_dropequal() {
        let keep = rule(|c| {
            c.source_labels = vec!["__tmp_port".into()];
            c.target_label = "port".into();
            c.action = RelabelAction::KeepEqual;
        });
        assert!(relabel(&keep, &mut ls(&[("__tmp_port", "9100"), ("port", "9100")])));
        assert!(!relabel(&keep, &mut ls(&[("__tmp_port", "9100"), ("port", "9200")])));
        let drop = rule(|c| {
            c.source_labels = vec!["__tmp_port".into()];
            c.target_label = "port".into();
            c.action = RelabelAction::DropEqual;
        });
        assert!(!relabel(&drop, &mut ls(&[("__tmp_port", "9100"), ("port", "9100")])));
        assert!(relabel(&drop, &mut ls(&[("__tmp_port", "9100"), ("port", "9200")])));
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // relabel_test.go: c="baz", modulus 1000 -> d="976".
        let r = rule(|c| {
            c.source_labels = vec!["c".into()];
            c.target_label = "d".into();
            c.modulus = 1000;
            c.action = RelabelAction::HashMod;
        });
        let mut l = ls(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        relabel(&r, &mut l);
        assert_eq!(l.get("d"), Some("976"));
    }

    #[test]
    fn labelmap_labeldrop_labelkeep() {
        // The documented Kubernetes example: copy __meta_* labels under new names.
        let r = rule(|c| {
            c.regex = "__meta_kubernetes_node_label_(.+)".into();
            c.action = RelabelAction::LabelMap;
        });
        let mut l = ls(&[("__meta_kubernetes_node_label_zone", "a"), ("job", "n")]);
        relabel(&r, &mut l);
        assert_eq!(l, ls(&[("__meta_kubernetes_node_label_zone", "a"), ("job", "n"), ("zone", "a")]));
        let r = rule(|c| {
            c.regex = "(b.*)".into();
            c.replacement = "${1}_mapped".into();
            c.action = RelabelAction::LabelMap;
        });
        let mut l = ls(&[("a", "foo"), ("b", "bar")]);
        relabel(&r, &mut l);
        assert_eq!(l.get("b_mapped"), Some("bar"));
        let r = rule(|c| {
            c.regex = "(b.*)".into();
            c.action = RelabelAction::LabelDrop;
        });
        let mut l = ls(&[("a", "foo"), ("b", "bar"), ("bc", "x")]);
        relabel(&r, &mut l);
        assert_eq!(l, ls(&[("a", "foo")]));
        let r = rule(|c| {
            c.regex = "(b.*)".into();
            c.action = RelabelAction::LabelKeep;
        });
        let mut l = ls(&[("a", "foo"), ("b", "bar"), ("bc", "x")]);
        relabel(&r, &mut l);
        assert_eq!(l, ls(&[("b", "bar"), ("bc", "x")]));
    }

    #[test]
    fn lowercase_and_uppercase() {
        let r = rule(|c| {
            c.source_labels = vec!["foo".into()];
            c.target_label = "foo_uppercase".into();
            c.action = RelabelAction::Uppercase;
        });
        let mut l = ls(&[("foo", "bAr123Foo")]);
        relabel(&r, &mut l);
        assert_eq!(l.get("foo_uppercase"), Some("BAR123FOO"));
        let r = rule(|c| {
            c.source_labels = vec!["foo".into()];
            c.target_label = "foo_lowercase".into();
            c.action = RelabelAction::Lowercase;
        });
        relabel(&r, &mut l);
        assert_eq!(l.get("foo_lowercase"), Some("bar123foo"));
    }
}
