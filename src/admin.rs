//! The admin HTTP app: health, readiness, metrics (open) and the `/v1` API (bearer token).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::audit::record::{format_time, parse_time_bound, AuditDecision};
use crate::audit::{AuditSink, AuditStore, LogQuery};
use crate::metrics::Metrics;
use crate::policy::normalize::percent_decode;
use crate::policy::PolicyStore;

pub struct AdminApp {
    pub policies: Arc<PolicyStore>,
    pub store: Arc<AuditStore>,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    /// Empty: `/v1` is open (only allowed on loopback, enforced by config validation).
    pub token: String,
}

type Reply = Response<Vec<u8>>;

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Reply {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_reply(status: StatusCode, value: serde_json::Value) -> Reply {
    let mut body = serde_json::to_vec(&value).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

fn error_reply(status: StatusCode, error: &str, reason: &str) -> Reply {
    json_reply(status, json!({ "error": error, "reason": reason }))
}

/// Compares without an early exit, so response time does not leak the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `application/x-www-form-urlencoded` pairs.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let decode = |s: &str| percent_decode(s, true);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(move |pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Reply {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        let authorized = self.token.is_empty()
            || req
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), self.token.as_bytes()));
        match (method, path.as_str()) {
            (Method::GET, "/health") => json_reply(
                StatusCode::OK,
                json!({ "status": "healthy", "version": env!("CARGO_PKG_VERSION") }),
            ),
            (Method::GET, "/health/live") => {
                json_reply(StatusCode::OK, json!({ "status": "alive" }))
            }
            (Method::GET, "/health/ready") => self.ready(),
            (Method::GET, "/metrics") => {
                self.metrics
                    .audit_queue_depth
                    .set(self.audit.queue_depth() as i64);
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            (_, p) if p.starts_with("/v1/") && !authorized => {
                let mut r = error_reply(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "send Authorization: Bearer <admin token>",
                );
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                r
            }
            (Method::GET, "/v1/logs") => self.logs(&query).await,
            (Method::GET, "/v1/policies") => self.policies_status(),
            (Method::POST, "/v1/policies/reload") => self.reload().await,
            (
                _,
                "/health"
                | "/health/live"
                | "/health/ready"
                | "/metrics"
                | "/v1/logs"
                | "/v1/policies"
                | "/v1/policies/reload",
            ) => error_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "see docs/admin-api.md",
            ),
            _ => error_reply(StatusCode::NOT_FOUND, "not_found", "see docs/admin-api.md"),
        }
    }
}

impl AdminApp {
    fn ready(&self) -> Reply {
        let policies = !self.policies.current().version.is_empty();
        let audit = self.audit.is_open();
        let status = if policies && audit {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_reply(
            status,
            json!({
                "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
                "policies": policies,
                "audit": audit,
            }),
        )
    }

    async fn logs(&self, query: &str) -> Reply {
        let mut q = LogQuery {
            limit: 100,
            ..LogQuery::default()
        };
        for (key, value) in query_pairs(query) {
            let bad = |what: &str| error_reply(StatusCode::BAD_REQUEST, "bad_request", what);
            match key.as_str() {
                "agent" => q.agent = Some(value),
                "host" => q.host = Some(value.to_ascii_lowercase()),
                "rule" => q.rule = Some(value),
                "decision" => match AuditDecision::parse(&value) {
                    Some(d) => q.decision = Some(d),
                    None => return bad("decision must be allow, deny or error"),
                },
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => q.limit = n,
                    _ => return bad("limit must be 1 to 1000"),
                },
                "cursor" => match value.parse::<u64>() {
                    Ok(c) => q.cursor = Some(c),
                    Err(_) => return bad("cursor must be a next_cursor value"),
                },
                "since" | "until" => match parse_time_bound(&value) {
                    Some(t) => {
                        let ts = Some(format_time(t));
                        if key == "since" {
                            q.since = ts
                        } else {
                            q.until = ts
                        }
                    }
                    None => return bad("since/until take RFC 3339 times or durations like 15m"),
                },
                other => return bad(&format!("unknown parameter {other:?}")),
            }
        }
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || store.query(&q)).await {
            Ok(Ok((records, next))) => json_reply(
                StatusCode::OK,
                json!({ "records": records, "next_cursor": next }),
            ),
            Ok(Err(e)) => error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            ),
            Err(e) => error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            ),
        }
    }

    fn policies_status(&self) -> Reply {
        let set = self.policies.current();
        let (loaded_at, last) = self.policies.status();
        json_reply(
            StatusCode::OK,
            json!({
                "version": set.version,
                "loaded_at": format_time(loaded_at),
                "default_effect": match set.default_effect {
                    crate::config::DefaultEffect::Allow => "allow",
                    crate::config::DefaultEffect::Deny => "deny",
                },
                "rules": set.rule_count(),
                "policies": set.summaries,
                "last_reload": last,
            }),
        )
    }

    async fn reload(&self) -> Reply {
        let store = Arc::clone(&self.policies);
        match tokio::task::spawn_blocking(move || store.reload()).await {
            Ok(Ok(())) => self.policies_status(),
            Ok(Err(errors)) => json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "error": "invalid_policy",
                    "reason": errors,
                    "version": self.policies.current().version,
                }),
            ),
            Err(e) => error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let pairs: Vec<_> =
            query_pairs("a=1&since=2026-11-22T03%3A00%3A00Z&b=x+y&c=%zz&d").collect();
        assert_eq!(pairs[0], ("a".into(), "1".into()));
        assert_eq!(pairs[1], ("since".into(), "2026-11-22T03:00:00Z".into()));
        assert_eq!(pairs[2], ("b".into(), "x y".into()));
        assert_eq!(pairs[3], ("c".into(), "%zz".into()));
        assert_eq!(pairs[4], ("d".into(), "".into()));
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
