//! The authorization matrix: every endpoint of the collector × {no token, a wrong token, a token
//! of each scope, a token asking for another tenant} gets the documented status, and no answer
//! ever holds data of a tenant the caller may not act for.
//!
//! Documented rules (README "Security"): `/ready` is public; push endpoints need `push`; the Loki
//! and Prometheus read APIs, `/federate` and the tail need `query`; `/-/*` needs `admin`;
//! `/metrics` needs `metrics`. No or an unknown token: 401. A token without the scope, or asking
//! (X-Scope-OrgID) for a tenant outside its list: 403. A one-tenant token always acts for its
//! tenant, whatever X-Scope-OrgID says.

mod harness;
mod security_support;

use harness::*;
use security_support::*;
use std::time::Duration;

const SECRETS: [(&str, &str, &str, &str); 8] = [
    ("push-a", "push-a-secret-0123456789", "[\"push\"]", "[\"team-a\"]"),
    ("push-b", "push-b-secret-0123456789", "[\"push\"]", "[\"team-b\"]"),
    ("query-a", "query-a-secret-0123456789", "[\"query\"]", "[\"team-a\"]"),
    ("query-ac", "query-ac-secret-0123456789", "[\"query\"]", "[\"team-a\", \"team-c\"]"),
    ("auditor", "auditor-secret-0123456789", "[\"query\"]", "[\"*\"]"),
    ("admin", "admin-secret-0123456789", "[\"admin\"]", "[]"),
    ("metrics", "metrics-secret-0123456789", "[\"metrics\"]", "[]"),
    ("pusher-querier", "both-secret-0123456789", "[\"push\", \"query\"]", "[\"team-a\"]"),
];

fn secret(name: &str) -> &'static str {
    SECRETS.iter().find(|s| s.0 == name).map(|s| s.1).unwrap()
}

/// Data only tenant b has: none of it may reach a caller acting for team-a or team-c.
const B_MARKERS: [&str; 5] = ["secret-of-b", "bob_only", "bob-owner", "only_b_metric", "bob_metric_label"];
/// Data only tenant a has.
const A_MARKERS: [&str; 5] = ["secret-of-a", "alice_only", "alice-owner", "only_a_metric", "alice_metric_label"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Need {
    Public,
    Push,
    Query,
    Admin,
    Metrics,
}

struct Endpoint {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, &'static str)>,
    need: Need,
    /// Status with a token that may call it.
    ok: u16,
    /// A substring a team-a caller's answer holds (shows the answer is not empty by accident).
    a_sees: Option<&'static str>,
}

fn endpoints(start_ns: u128) -> Vec<Endpoint> {
    let q = |need, path: String, ok, a_sees| Endpoint {
        method: "GET",
        path,
        body: vec![],
        headers: vec![],
        need,
        ok,
        a_sees,
    };
    let logs = enc(r#"{job="app"}"#);
    let mut v = vec![
        q(Need::Query, format!("/loki/api/v1/query_range?query={logs}&since=1h&limit=1000"), 200, Some("secret-of-a")),
        q(
            Need::Query,
            format!("/loki/api/v1/query?query={}", enc(r#"sum by (owner) (count_over_time({job="app"}[1h]))"#)),
            200,
            Some("alice-owner"),
        ),
        q(Need::Query, "/loki/api/v1/labels?since=1h".into(), 200, Some("alice_only")),
        q(Need::Query, "/loki/api/v1/label/owner/values?since=1h".into(), 200, Some("alice-owner")),
        q(Need::Query, format!("/loki/api/v1/series?match[]={logs}&since=1h"), 200, Some("alice-owner")),
        q(Need::Query, format!("/loki/api/v1/index/stats?query={logs}&since=1h"), 200, Some("\"streams\":1")),
        q(
            Need::Query,
            format!("/loki/api/v1/index/volume?query={logs}&since=1h&targetLabels=owner"),
            200,
            Some("alice-owner"),
        ),
        q(
            Need::Query,
            format!("/loki/api/v1/index/volume_range?query={logs}&since=1h&targetLabels=owner&step=60"),
            200,
            Some("alice-owner"),
        ),
        q(Need::Query, "/loki/api/v1/status/buildinfo".into(), 200, Some("version")),
        Endpoint {
            method: "GET",
            path: format!("/loki/api/v1/tail?query={logs}&start={start_ns}"),
            body: vec![],
            headers: vec![
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            need: Need::Query,
            ok: 101,
            a_sees: None,
        },
        q(Need::Query, format!("/api/v1/query?query={}", enc(r#"{__name__=~"only_.*"}"#)), 200, Some("only_a_metric")),
        // Refused by design (the store keeps latest samples only), after authorization.
        q(Need::Query, "/api/v1/query_range?query=up&start=0&end=1&step=1".into(), 400, None),
        q(
            Need::Query,
            format!("/api/v1/series?match[]={}", enc(r#"{__name__=~"only_.*"}"#)),
            200,
            Some("only_a_metric"),
        ),
        q(Need::Query, "/api/v1/labels".into(), 200, Some("alice_metric_label")),
        q(Need::Query, "/api/v1/label/__name__/values".into(), 200, Some("only_a_metric")),
        q(Need::Query, "/api/v1/metadata".into(), 200, Some("success")),
        q(Need::Query, "/api/v1/status/buildinfo".into(), 200, Some("version")),
        q(Need::Query, format!("/federate?match[]={}", enc(r#"{__name__=~"only_.*"}"#)), 200, Some("only_a_metric")),
        q(Need::Query, "/no/such/path".into(), 404, None),
        q(Need::Metrics, "/metrics".into(), 200, Some("osprey_rejected_requests_total")),
        q(Need::Public, "/ready".into(), 200, None),
        q(Need::Public, "/health".into(), 200, Some("checks")),
        q(Need::Admin, "/-/log-level".into(), 200, None),
        // The config file is unchanged: the reload succeeds and changes nothing.
        Endpoint {
            method: "POST",
            path: "/-/reload".into(),
            body: vec![],
            headers: vec![],
            need: Need::Admin,
            ok: 200,
            a_sees: None,
        },
    ];
    let push = push_body(r#"{"job":"matrix"}"#, &["pushed by the matrix"]);
    v.push(Endpoint {
        method: "POST",
        path: "/loki/api/v1/push".into(),
        body: push,
        headers: vec![JSON],
        need: Need::Push,
        ok: 204,
        a_sees: None,
    });
    for path in ["/api/v1/write", "/api/v1/push"] {
        v.push(Endpoint {
            method: "POST",
            path: path.into(),
            body: write_body(&[&[("__name__", "matrix_write"), ("job", "matrix")]]),
            headers: REMOTE_WRITE.to_vec(),
            need: Need::Push,
            ok: 204,
            a_sees: None,
        });
    }
    v
}

/// Who calls: a token (by name) and an X-Scope-OrgID, and what that caller may do.
struct Caller {
    label: &'static str,
    token: Option<&'static str>,
    org: Option<&'static str>,
    /// Scopes that work for this caller (an empty list for no or a wrong token).
    may: &'static [Need],
    /// 401 (no or wrong credentials) or 403 for what it may not do.
    otherwise: u16,
    /// The tenant it acts for, when it acts for one.
    tenant: Option<&'static str>,
}

#[test]
fn every_endpoint_by_every_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut auth = String::from("[auth]\nenabled = true\n");
    for (name, secret, scopes, tenants) in SECRETS {
        let file = dir.join(format!("{name}.token"));
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        auth.push_str(&format!(
            "[[auth.tokens]]\nname = {name:?}\nfile = {:?}\nscopes = {scopes}\ntenants = {tenants}\n",
            file.display().to_string()
        ));
    }
    let (_collector, url) = start_collector(dir, &collector_config(dir, &auth));
    let bearer = |name: &str| format!("Bearer {}", secret(name));

    // Seed: each tenant's own lines and series, through its own push token.
    let start_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() - 60_000_000_000;
    let pa = bearer("push-a");
    let pb = bearer("push-b");
    let seed = [
        (&pa, None, r#"{"job":"app","owner":"alice-owner","alice_only":"1"}"#, "secret-of-a"),
        (&pb, None, r#"{"job":"app","owner":"bob-owner","bob_only":"1"}"#, "secret-of-b"),
        // A one-tenant token that asks for another tenant still writes to its own.
        (&pa, Some("team-b"), r#"{"job":"app","owner":"alice-owner","alice_only":"1"}"#, "a-pretending-b"),
    ];
    for (token, org, labels, line) in seed {
        let mut h = vec![JSON, ("Authorization", token.as_str())];
        if let Some(o) = org {
            h.push(("X-Scope-OrgID", o));
        }
        let a = http(&url, "POST", "/loki/api/v1/push", &h, &push_body(labels, &[line])).unwrap();
        assert_eq!(a.status, 204, "seeding {line}: {a:?}");
    }
    for (token, series) in [
        (&pa, [("__name__", "only_a_metric"), ("alice_metric_label", "x")]),
        (&pb, [("__name__", "only_b_metric"), ("bob_metric_label", "y")]),
    ] {
        let mut h = REMOTE_WRITE.to_vec();
        h.push(("Authorization", token.as_str()));
        let a = http(&url, "POST", "/api/v1/write", &h, &write_body(&[&series])).unwrap();
        assert_eq!(a.status, 204, "{a:?}");
    }
    let auditor = bearer("auditor");
    let as_auditor = |org: &str, path: &str| {
        http(&url, "GET", path, &[("Authorization", auditor.as_str()), ("X-Scope-OrgID", org)], b"").unwrap()
    };
    let logs_path = format!("/loki/api/v1/query_range?query={}&since=1h", enc(r#"{job="app"}"#));
    let b_view = as_auditor("team-b", &logs_path);
    assert!(b_view.body.contains("secret-of-b"), "{b_view:?}");
    assert!(!b_view.body.contains("a-pretending-b"), "a team-a token wrote into team-b: {b_view:?}");
    assert!(as_auditor("team-a", &logs_path).body.contains("a-pretending-b"));

    let callers = [
        Caller { label: "no token", token: None, org: None, may: &[], otherwise: 401, tenant: Some("team-a") },
        Caller {
            label: "wrong token",
            token: Some("Bearer not-a-known-token-000000"),
            org: None,
            may: &[],
            otherwise: 401,
            tenant: Some("team-a"),
        },
        Caller {
            label: "push-a",
            token: Some("push-a"),
            org: None,
            may: &[Need::Push],
            otherwise: 403,
            tenant: Some("team-a"),
        },
        Caller {
            label: "query-a",
            token: Some("query-a"),
            org: None,
            may: &[Need::Query],
            otherwise: 403,
            tenant: Some("team-a"),
        },
        Caller { label: "admin", token: Some("admin"), org: None, may: &[Need::Admin], otherwise: 403, tenant: None },
        Caller {
            label: "metrics",
            token: Some("metrics"),
            org: None,
            may: &[Need::Metrics],
            otherwise: 403,
            tenant: None,
        },
        Caller {
            label: "push+query",
            token: Some("pusher-querier"),
            org: None,
            may: &[Need::Push, Need::Query],
            otherwise: 403,
            tenant: Some("team-a"),
        },
        // Other tenant: a one-tenant token asking for team-b acts for team-a anyway.
        Caller {
            label: "query-a as team-b",
            token: Some("query-a"),
            org: Some("team-b"),
            may: &[Need::Query],
            otherwise: 403,
            tenant: Some("team-a"),
        },
        Caller {
            label: "push-a as team-b",
            token: Some("push-a"),
            org: Some("team-b"),
            may: &[Need::Push],
            otherwise: 403,
            tenant: Some("team-a"),
        },
        // A token for team-a and team-c may not ask for team-b...
        Caller {
            label: "query-ac as team-b",
            token: Some("query-ac"),
            org: Some("team-b"),
            may: &[],
            otherwise: 403,
            tenant: Some("team-a"),
        },
        // ... and asking for team-c sees team-c only (nothing of a or b).
        Caller {
            label: "query-ac as team-c",
            token: Some("query-ac"),
            org: Some("team-c"),
            may: &[Need::Query],
            otherwise: 403,
            tenant: Some("team-c"),
        },
    ];

    let mut checked = 0;
    for caller in &callers {
        let auth_header = caller.token.map(|t| if t.starts_with("Bearer ") { t.to_string() } else { bearer(t) });
        for ep in endpoints(start_ns) {
            let mut headers = ep.headers.clone();
            if let Some(a) = &auth_header {
                headers.push(("Authorization", a.as_str()));
            }
            if let Some(o) = caller.org {
                headers.push(("X-Scope-OrgID", o));
            }
            let what = format!("{} {} {} by {}", ep.method, ep.path, ep.need_label(), caller.label);
            let a = http(&url, ep.method, &ep.path, &headers, &ep.body).unwrap_or_else(|e| panic!("{what}: {e}"));
            let allowed = ep.need == Need::Public || caller.may.contains(&ep.need);
            if allowed {
                if ep.ok == 0 {
                    assert!(![401, 403].contains(&a.status), "{what}: {a:?}");
                } else {
                    assert_eq!(a.status, ep.ok, "{what}: {a:?}");
                }
            } else {
                assert_eq!(a.status, caller.otherwise, "{what}: {a:?}");
                if a.status == 401 {
                    assert!(
                        a.headers.iter().any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer")),
                        "{what}: {a:?}"
                    );
                    assert!(
                        a.body.contains("missing credentials") || a.body.contains("invalid token"),
                        "{what}: {a:?}"
                    );
                } else {
                    assert!(a.body.contains("may not"), "{what}: the 403 says why: {a:?}");
                }
            }
            // Isolation: nothing of team-b, ever; nothing of team-a for a team-c caller.
            for m in B_MARKERS {
                assert!(!a.body.contains(m), "{what}: answer holds team-b data ({m}): {}", a.body);
            }
            if caller.tenant == Some("team-c") {
                for m in A_MARKERS {
                    assert!(!a.body.contains(m), "{what}: team-c caller sees team-a data ({m}): {}", a.body);
                }
            } else if allowed
                && caller.tenant == Some("team-a")
                && let Some(expected) = ep.a_sees
            {
                assert!(a.body.contains(expected), "{what}: expected {expected:?} in {}", a.body);
            }
            checked += 1;
        }
    }
    assert!(checked > 250, "{checked}");

    // The tail websocket, other tenant asked: only team-a's lines flow.
    let host = host_port(&url);
    let tail_url = format!("ws://{host}/loki/api/v1/tail?query={}&start={start_ns}", enc(r#"{job="app"}"#));
    let frame = tail_first_frame(&tail_url, &bearer("query-a"), "team-b");
    assert!(frame.contains("secret-of-a"), "{frame}");
    for m in B_MARKERS {
        assert!(!frame.contains(m), "tail leaked {m}: {frame}");
    }

    // Refusals are counted; no secret was ever logged.
    let m = http(&url, "GET", "/metrics", &[("Authorization", &bearer("metrics"))], b"").unwrap().body;
    assert!(
        metric(&m, r#"osprey_rejected_requests_total{endpoint="loki_query_range",reason="unauthenticated"}"#) >= 2.0,
        "{m}"
    );
    assert!(metric(&m, r#"osprey_rejected_requests_total{endpoint="federate",reason="forbidden"}"#) >= 1.0, "{m}");
    let log = std::fs::read_to_string(dir.join("collector.log")).unwrap_or_default();
    for (_, secret, _, _) in SECRETS {
        assert!(!log.contains(secret), "a token appears in the log");
    }
}

impl Endpoint {
    fn need_label(&self) -> &'static str {
        match self.need {
            Need::Public => "(public)",
            Need::Push => "(push)",
            Need::Query => "(query)",
            Need::Admin => "(admin)",
            Need::Metrics => "(metrics)",
        }
    }
}

fn tail_first_frame(url: &str, authorization: &str, org: &str) -> String {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("authorization", authorization.parse().unwrap());
        req.headers_mut().insert("x-scope-orgid", org.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("tail opens");
        let msg =
            tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("a tail frame").unwrap().unwrap();
        msg.into_text().unwrap().to_string()
    })
}

#[test]
fn with_auth_off_tenants_are_still_checked_and_separate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_collector, url) = start_collector(dir, &collector_config(dir, ""));
    for (org, line) in [("team-a", "secret-of-a"), ("team-b", "secret-of-b")] {
        let a = http(
            &url,
            "POST",
            "/loki/api/v1/push",
            &[JSON, ("X-Scope-OrgID", org)],
            &push_body(r#"{"job":"app"}"#, &[line]),
        )
        .unwrap();
        assert_eq!(a.status, 204);
    }
    let path = format!("/loki/api/v1/query_range?query={}&since=1h", enc(r#"{job="app"}"#));
    let a = http(&url, "GET", &path, &[("X-Scope-OrgID", "team-a")], b"").unwrap();
    assert!(a.body.contains("secret-of-a") && !a.body.contains("secret-of-b"), "{a:?}");
    // Loki's cross-tenant syntax and names that are not tenant names are refused, not guessed.
    for bad in ["team-a|team-b", "../x", "a b"] {
        let a = http(&url, "GET", &path, &[("X-Scope-OrgID", bad)], b"").unwrap();
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        assert!(a.body.contains("invalid X-Scope-OrgID"), "{a:?}");
        assert!(!a.body.contains("secret-of"), "{a:?}");
    }
}

/// Tokens reload with the config (SIGHUP or `POST /-/reload` by an admin): a rotated secret
/// works at once and the old one is refused; an unusable token file rejects the whole reload
/// and the running tokens stay.
#[test]
fn tokens_rotate_on_reload_and_a_bad_token_file_keeps_the_running_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let push_file = dir.join("push.token");
    let admin_file = dir.join("admin.token");
    std::fs::write(&push_file, "first-push-secret-0123456789\n").unwrap();
    std::fs::write(&admin_file, "admin-secret-for-reloads-0123\n").unwrap();
    let query_file = dir.join("query.token");
    std::fs::write(&query_file, "query-secret-for-t-0123456\n").unwrap();
    let auth = format!(
        "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"push\"\nfile = {:?}\nscopes = [\"push\"]\ntenants = [\"t\"]\n[[auth.tokens]]\nname = \"admin\"\nfile = {:?}\nscopes = [\"admin\"]\ntenants = []\n[[auth.tokens]]\nname = \"query\"\nfile = {:?}\nscopes = [\"query\"]\ntenants = [\"t\"]\n",
        push_file.display().to_string(),
        admin_file.display().to_string(),
        query_file.display().to_string()
    );
    let (collector, url) = start_collector(dir, &collector_config(dir, &auth));
    let push_as = |secret: &str, line: &str| {
        let bearer = format!("Bearer {secret}");
        let h = [JSON, ("Authorization", bearer.as_str())];
        http(&url, "POST", "/loki/api/v1/push", &h, &push_body(r#"{"job":"rot"}"#, &[line])).unwrap().status
    };
    let admin = "Bearer admin-secret-for-reloads-0123";
    assert_eq!(push_as("first-push-secret-0123456789", "one"), 204);

    // Rotate through POST /-/reload.
    std::fs::write(&push_file, "second-push-secret-0123456789\n").unwrap();
    let a = http(&url, "POST", "/-/reload", &[("Authorization", admin)], b"").unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(push_as("second-push-secret-0123456789", "two"), 204);
    assert_eq!(push_as("first-push-secret-0123456789", "refused"), 401);

    // A token file too short to be a secret: the reload is refused with the file named; the
    // running tokens keep working.
    std::fs::write(&push_file, "short\n").unwrap();
    let a = http(&url, "POST", "/-/reload", &[("Authorization", admin)], b"").unwrap();
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.body.contains("push.token"), "the refusal names the token file: {a:?}");
    assert_eq!(push_as("second-push-secret-0123456789", "three"), 204);

    // SIGHUP rotates too.
    std::fs::write(&push_file, "third-push-secret-0123456789\n").unwrap();
    collector.signal("HUP");
    let rotated =
        eventually(Duration::from_secs(20), || (push_as("third-push-secret-0123456789", "four") == 204).then_some(()));
    assert!(rotated.is_some(), "SIGHUP never applied the rotated token");
    assert_eq!(push_as("second-push-secret-0123456789", "refused"), 401);

    // Every accepted line is there, no refused one (the query token was read from its file at
    // each reload too, unchanged).
    let q = format!("/loki/api/v1/query_range?query={}&since=1h", enc(r#"{job="rot"}"#));
    let a = http(&url, "GET", &q, &[("Authorization", "Bearer query-secret-for-t-0123456")], b"").unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    for line in ["one", "two", "three", "four"] {
        assert!(a.body.contains(&format!("\"{line}\"")), "{line} missing: {}", a.body);
    }
    assert!(!a.body.contains("refused"), "{}", a.body);
    let log = std::fs::read_to_string(dir.join("collector.log")).unwrap_or_default();
    for secret in ["first-push-secret", "second-push-secret", "third-push-secret", "admin-secret-for-reloads"] {
        assert!(!log.contains(secret), "a token appears in the log");
    }
}
