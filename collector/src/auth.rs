//! Who may call what, for which tenant.
//!
//! Every route needs one [`Access`]: public (`/ready`, `/health`, and `/metrics` when
//! `auth.public_metrics`), or a token with a scope: `push` for Loki push and remote_write,
//! `admin` for everything under `/-/`, `metrics` for `/metrics`, and `query` for everything
//! else (the Loki and Prometheus read APIs, `/federate`, the tail websocket, and unknown paths,
//! which then answer 404). The route is the one that matched (axum's `MatchedPath`), so a
//! request is always judged by the handler that would run.
//!
//! [`authorize`] runs before every handler: 401 without credentials or with a token that is not
//! known, 403 with a token that lacks the scope or asks for a tenant it may not act for, 400 for
//! an `X-Scope-OrgID` that is not a valid tenant name. It then rewrites `X-Scope-OrgID` to the one
//! tenant the request acts for, so every handler (which reads the tenant with
//! [`crate::http::tenant`]) is limited to it. With auth off the header is only validated.
//!
//! Tokens live in files, one per `[[auth.tokens]]`; [`TokenTable::from_config`] reads them all
//! and reports every unusable one. The table sits behind a lock and [`Auth::reload`] swaps it
//! whole (SIGHUP, `POST /-/reload`); requests in flight keep the table they started with.

use crate::State;
use axum::extract::{MatchedPath, Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use osprey_config::CollectorConfig;
use osprey_config::collector::{Scope, check_tenant_id};
use osprey_server::token::{self, Credentials, Digest};
use std::sync::{Arc, PoisonError, RwLock};

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    Needs(Scope),
}

/// The access rule of a route, by its matched path (`None`: no route matched; then a path
/// under `/-/` still needs `admin`, anything else `query`).
pub fn access(route: Option<&str>, path: &str, public_metrics: bool) -> Access {
    match route.or(path.starts_with("/-/").then_some(path)) {
        Some("/ready" | "/health") => Access::Public,
        Some("/metrics") if public_metrics => Access::Public,
        Some("/metrics") => Access::Needs(Scope::Metrics),
        Some("/loki/api/v1/push" | "/api/v1/write" | "/api/v1/push") => Access::Needs(Scope::Push),
        Some(p) if p.starts_with("/-/") => Access::Needs(Scope::Admin),
        _ => Access::Needs(Scope::Query),
    }
}

/// Tenants a token acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tenants {
    /// Always this one; `X-Scope-OrgID` is ignored.
    One(String),
    /// `X-Scope-OrgID` picks one (the first when absent).
    Among(Vec<String>),
    /// Any, by `X-Scope-OrgID` (else the default tenant).
    Any,
}

#[derive(Debug)]
struct Entry {
    name: String,
    scopes: Vec<Scope>,
    tenants: Tenants,
}

/// The tokens in force, and the switches that go with them.
#[derive(Debug)]
pub struct TokenTable {
    enabled: bool,
    public_metrics: bool,
    default_tenant: String,
    digests: Vec<Digest>,
    entries: Vec<Entry>,
}

/// Token files that could not be used, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct AuthError {
    pub problems: Vec<String>,
}

impl TokenTable {
    /// Reads every token file of `[auth]`. All unusable files are reported, each naming its
    /// key (`auth.tokens[2].file`) and path; no secret appears in an error.
    pub fn from_config(cfg: &CollectorConfig) -> Result<TokenTable, AuthError> {
        let auth = &cfg.auth;
        let mut problems = Vec::new();
        let mut digests = Vec::new();
        let mut entries = Vec::new();
        if auth.enabled {
            for (i, t) in auth.tokens.iter().enumerate() {
                match Digest::read_file(&format!("auth.tokens[{i}].file"), &t.file) {
                    Ok(d) => {
                        if digests.iter().any(|k: &Digest| k.same(&d)) {
                            problems.push(format!(
                                "auth.tokens[{i}].file {}: holds the same token as another [[auth.tokens]]; each needs its own",
                                t.file
                            ));
                            continue;
                        }
                        digests.push(d);
                        let tenants = match t.tenants.as_slice() {
                            [any] if any == "*" => Tenants::Any,
                            [one] => Tenants::One(one.clone()),
                            many => Tenants::Among(many.to_vec()),
                        };
                        entries.push(Entry { name: t.name.clone(), scopes: t.scopes.clone(), tenants });
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        if !problems.is_empty() {
            return Err(AuthError { problems });
        }
        Ok(TokenTable {
            enabled: auth.enabled,
            public_metrics: auth.public_metrics,
            default_tenant: cfg.logs.default_tenant.clone(),
            digests,
            entries,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The table behind a lock, swapped whole by [`Auth::reload`].
pub struct Auth {
    table: RwLock<Arc<TokenTable>>,
}

impl Auth {
    pub fn new(cfg: &CollectorConfig) -> Result<Auth, AuthError> {
        Ok(Auth { table: RwLock::new(Arc::new(TokenTable::from_config(cfg)?)) })
    }

    /// The table in force.
    pub fn table(&self) -> Arc<TokenTable> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads the token files of `cfg` and swaps them in; on error the running table stays.
    pub fn reload(&self, cfg: &CollectorConfig) -> Result<(), AuthError> {
        let table = TokenTable::from_config(cfg)?;
        self.swap(table);
        Ok(())
    }

    /// Swaps in a table built beforehand (so a reload can check everything before changing
    /// anything).
    pub fn swap(&self, table: TokenTable) {
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }
}

/// Why a request was refused, and how to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

fn refuse(status: StatusCode, reason: &'static str, message: String) -> Refusal {
    Refusal { status, reason, message }
}

/// Decides a request: `Ok(Some(tenant))` for tenant-scoped routes, `Ok(None)` for the others.
pub fn decide(
    table: &TokenTable,
    route: Option<&str>,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Result<Option<String>, Refusal> {
    let access = access(route, path, table.public_metrics);
    let asked = match headers.get("x-scope-orgid").map(|v| v.to_str().map(str::trim)) {
        None | Some(Ok("")) => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return Err(refuse(StatusCode::BAD_REQUEST, "bad_tenant", "X-Scope-OrgID is not valid text".into()));
        }
    };
    let tenant_scoped = matches!(access, Access::Needs(Scope::Push | Scope::Query));
    if let Some(t) = asked
        && tenant_scoped
        && let Err(e) = check_tenant_id(t)
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "bad_tenant", format!("invalid X-Scope-OrgID: {e}")));
    }
    let Access::Needs(scope) = access else { return Ok(None) };
    if !table.enabled {
        return Ok(tenant_scoped.then(|| asked.unwrap_or(&table.default_tenant).to_string()));
    }
    let presented = match token::credentials(headers) {
        Credentials::Bearer(t) => t,
        Credentials::None => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                format!(
                    "missing credentials: {path} needs a token with the {} scope (Authorization: Bearer <token>)",
                    scope.as_str()
                ),
            ));
        }
        Credentials::Unsupported => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unsupported Authorization header: send Authorization: Bearer <token>".into(),
            ));
        }
    };
    let Some(i) = token::find(&table.digests, presented) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "invalid token: it is not one of auth.tokens".into(),
        ));
    };
    let entry = &table.entries[i];
    if !entry.scopes.contains(&scope) {
        let has: Vec<&str> = entry.scopes.iter().map(|s| s.as_str()).collect();
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} may not call {path}: it needs the {} scope, the token has {}",
                entry.name,
                scope.as_str(),
                has.join(", ")
            ),
        ));
    }
    if !tenant_scoped {
        return Ok(None);
    }
    let tenant = match (&entry.tenants, asked) {
        (Tenants::One(t), _) => t.clone(),
        (Tenants::Among(list), None) => list[0].clone(),
        (Tenants::Among(list), Some(a)) if list.iter().any(|t| t == a) => a.to_string(),
        (Tenants::Among(list), Some(a)) => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {:?} may not act for tenant {a:?} (X-Scope-OrgID); it may for {}",
                    entry.name,
                    list.join(", ")
                ),
            ));
        }
        (Tenants::Any, a) => a.unwrap_or(&table.default_tenant).to_string(),
    };
    Ok(Some(tenant))
}

/// The middleware: decides, answers refusals (counted in
/// `osprey_rejected_requests_total{reason="unauthenticated"|"forbidden"|"bad_tenant"}`), pins
/// `X-Scope-OrgID` to the request's tenant, and holds a per-tenant query slot for query routes
/// (`limits.max_concurrent_queries`, 429 when the tenant has them all).
pub async fn authorize(AxumState(state): AxumState<Arc<State>>, mut req: Request, next: Next) -> Response {
    let table = state.auth.table();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let endpoint = crate::http::endpoint_name(route.as_deref().unwrap_or(""));
    let decided = decide(&table, route.as_deref(), req.uri().path(), req.headers());
    let tenant = match decided {
        Ok(t) => t,
        Err(r) => {
            state.telemetry.reject(endpoint, r.reason);
            let mut resp = crate::http::text_error(r.status, r.message);
            if r.status == StatusCode::UNAUTHORIZED {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"osprey\""));
            }
            return resp;
        }
    };
    let Some(tenant) = tenant else { return next.run(req).await };
    let Ok(value) = HeaderValue::from_str(&tenant) else {
        // Tenant names were checked to be plain ASCII; this cannot happen.
        return crate::http::text_error(StatusCode::INTERNAL_SERVER_ERROR, "tenant name is not a header value");
    };
    req.headers_mut().insert("x-scope-orgid", value);
    let query = access(route.as_deref(), req.uri().path(), table.public_metrics) == Access::Needs(Scope::Query);
    drop(table);
    if !query {
        return next.run(req).await;
    }
    match state.limits.query_permit(&tenant) {
        Ok(permit) => {
            let resp = next.run(req).await;
            drop(permit);
            resp
        }
        Err(message) => {
            state.telemetry.reject(endpoint, "tenant_query_limit");
            crate::http::text_error(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;
    use osprey_config::collector::Token;

    fn table(dir: &std::path::Path) -> TokenTable {
        let mut cfg = CollectorConfig::default();
        cfg.auth.enabled = true;
        for (name, secret, scopes, tenants) in [
            ("pusher", "push-secret-0000000000", vec![Scope::Push], vec!["a"]),
            ("reader", "query-secret-000000000", vec![Scope::Query], vec!["a", "b"]),
            ("ops", "admin-secret-000000000", vec![Scope::Admin, Scope::Metrics], vec![]),
            ("any", "any-secret-00000000000", vec![Scope::Query], vec!["*"]),
        ] {
            let file = dir.join(name);
            std::fs::write(&file, secret).unwrap();
            cfg.auth.tokens.push(Token {
                name: name.into(),
                file: file.display().to_string(),
                scopes,
                tenants: tenants.into_iter().map(String::from).collect(),
            });
        }
        TokenTable::from_config(&cfg).unwrap()
    }

    fn headers(token: Option<&str>, tenant: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        }
        if let Some(t) = tenant {
            h.insert("x-scope-orgid", t.parse().unwrap());
        }
        h
    }

    #[test]
    fn decides_scopes_and_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path());
        let push = Some("/loki/api/v1/push");
        let query = Some("/loki/api/v1/query_range");
        let d = |route, token, tenant| decide(&t, route, "/p", &headers(token, tenant));
        assert_eq!(d(push, None, None).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(d(push, Some("wrong-secret-000000000"), None).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(d(push, Some("push-secret-0000000000"), None), Ok(Some("a".into())));
        // A one-tenant token overrides the header.
        assert_eq!(d(push, Some("push-secret-0000000000"), Some("b")), Ok(Some("a".into())));
        assert_eq!(d(query, Some("push-secret-0000000000"), None).unwrap_err().status, StatusCode::FORBIDDEN);
        // A several-tenant token: the header picks among them, the first by default.
        assert_eq!(d(query, Some("query-secret-000000000"), None), Ok(Some("a".into())));
        assert_eq!(d(query, Some("query-secret-000000000"), Some("b")), Ok(Some("b".into())));
        let e = d(query, Some("query-secret-000000000"), Some("c")).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("\"c\""), "{}", e.message);
        assert_eq!(d(query, Some("any-secret-00000000000"), Some("zz")), Ok(Some("zz".into())));
        assert_eq!(d(query, Some("any-secret-00000000000"), None), Ok(Some("fake".into())));
        // Admin and metrics routes carry no tenant.
        assert_eq!(d(Some("/-/reload"), Some("admin-secret-000000000"), None), Ok(None));
        assert_eq!(
            d(Some("/-/reload"), Some("query-secret-000000000"), None).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(d(Some("/metrics"), Some("admin-secret-000000000"), None), Ok(None));
        assert_eq!(d(Some("/metrics"), None, None).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(d(Some("/ready"), None, None), Ok(None));
        // Unknown routes need a query token (then 404), or an admin one under /-/.
        assert_eq!(d(None, None, None).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(decide(&t, None, "/-/x", &headers(Some("admin-secret-000000000"), None)), Ok(None));
        // Multi-tenant queries and odd names are refused before anything else.
        let e = d(query, Some("any-secret-00000000000"), Some("a|b")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unusable_token_files_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = CollectorConfig::default();
        cfg.auth.enabled = true;
        std::fs::write(dir.path().join("short"), "abc").unwrap();
        for (i, f) in ["missing", "short"].iter().enumerate() {
            cfg.auth.tokens.push(Token {
                name: format!("t{i}"),
                file: dir.path().join(f).display().to_string(),
                scopes: vec![Scope::Push],
                tenants: vec!["a".into()],
            });
        }
        let e = TokenTable::from_config(&cfg).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(e.problems[0].starts_with("auth.tokens[0].file"), "{e}");
        assert!(e.problems[1].starts_with("auth.tokens[1].file"), "{e}");
    }
}
