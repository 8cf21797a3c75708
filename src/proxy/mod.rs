//! The proxy: pingora's `ProxyHttp` phases, each calling one stage by name.
//!
//! `request_filter` decides (identity → normalize → policy → egress) before any upstream
//! connection exists, so no byte of a denied request reaches the upstream.
//! `upstream_request_filter` sends exactly the normalized target that was evaluated.
//! `logging` records the outcome to the audit channel.

pub mod admission;
pub mod refusal;
pub mod routes;
pub mod scrub;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::audit::record::format_time;
use crate::audit::{AuditDecision, AuditRecord, AuditSink};
use crate::egress::EgressGuard;
use crate::identity;
use crate::metrics::Metrics;
use crate::policy::normalize;
use crate::policy::{PolicySet, PolicyStore};
use admission::Admission;
use refusal::Refusal;
use routes::RouteTable;

/// Everything the phases share; built once at startup.
pub struct Agentwall {
    pub identity: Arc<crate::identity::Identity>,
    pub policies: Arc<PolicyStore>,
    pub routes: RouteTable,
    pub egress: EgressGuard,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    pub upstream_timeout: Duration,
}

/// A request id unique within this process and across restarts.
#[derive(Debug, Clone)]
pub struct RequestId(String);

impl RequestId {
    fn next() -> RequestId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static BOOT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let boot = *BOOT.get_or_init(|| {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            (t ^ (t >> 32) ^ u64::from(std::process::id()).rotate_left(16)) as u32
        });
        RequestId(format!(
            "{boot:08x}{:012x}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What one request has learned so far, phase by phase.
pub struct RequestCtx {
    request_id: RequestId,
    started: Instant,
    admission: Admission,
    policies: Option<Arc<PolicySet>>,
    peer: Option<SocketAddr>,
    refusal: Option<Refusal>,
    upstream_started: Option<Instant>,
    /// Set when the route's injected credentials must be scrubbed from the response body.
    scrubber: Option<scrub::Scrubber>,
    /// Room reserved in the audit queue for this request's record.
    audit_slot: Option<crate::audit::AuditSlot>,
}

#[async_trait]
impl ProxyHttp for Agentwall {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: RequestId::next(),
            started: Instant::now(),
            admission: Admission::default(),
            policies: None,
            peer: None,
            refusal: None,
            upstream_started: None,
            scrubber: None,
            audit_slot: None,
        }
    }

    /// Decides the request. Returning `Ok(true)` means agentwall answered it itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let admitted = match self.audit.reserve().await {
            Ok(slot) => {
                ctx.audit_slot = slot;
                self.admit(session, ctx).await
            }
            Err(full) => Err(Refusal::Unavailable(format!("{full}; retry shortly"))),
        };
        let Err(refusal) = admitted else {
            return Ok(false);
        };
        if let Refusal::Unauthenticated { failure, .. } = &refusal {
            self.metrics
                .auth_failures
                .with_label_values(&[failure.code()])
                .inc();
        }
        respond(session, ctx, &refusal).await?;
        ctx.refusal = Some(refusal);
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(addr), Some(target)) = (ctx.peer, ctx.admission.target.as_ref()) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no admitted destination",
            ));
        };
        let tls = target.scheme == normalize::Scheme::Https;
        let mut peer = HttpPeer::new(addr, tls, target.host.clone());
        peer.options.connection_timeout = Some(self.upstream_timeout);
        peer.options.total_connection_timeout = Some(self.upstream_timeout);
        peer.options.read_timeout = Some(self.upstream_timeout);
        peer.options.write_timeout = Some(self.upstream_timeout);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// Sends the evaluated target, strips agent credentials and injects route headers.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(target) = ctx.admission.target.as_ref() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no admitted target",
            ));
        };
        upstream.set_raw_path(target.origin_form().as_bytes())?;
        upstream.insert_header(http::header::HOST, target.authority())?;
        strip_agent_headers(upstream);
        if ctx.admission.token_source == Some(identity::TokenSource::Authorization) {
            upstream.remove_header(&http::header::AUTHORIZATION);
        }
        if let Some(route) = &ctx.admission.route {
            for (name, value) in &route.headers {
                upstream.insert_header(name.clone(), value.clone())?;
            }
            if !route.secrets.is_empty() {
                // Scrubbing needs the body as sent: ask for it uncompressed.
                upstream.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(route) = ctx
            .admission
            .route
            .as_ref()
            .filter(|r| !r.secrets.is_empty())
        {
            if let Err(why) = scrub::scrub_headers(response, &route.secrets) {
                ctx.refusal = Some(Refusal::BadGateway(why.to_string()));
                return Err(Error::explain(
                    ErrorType::HTTPStatus(502),
                    "response refused",
                ));
            }
            if session.req_header().version == http::Version::HTTP_11
                && !response
                    .headers
                    .contains_key(http::header::TRANSFER_ENCODING)
            {
                // The length may change: re-frame as chunked so the connection can be reused.
                response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
            ctx.scrubber = Some(scrub::Scrubber::new(route.secrets.clone()));
        }
        Ok(())
    }

    /// Streams the body through the route's scrubber, if any.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(scrubber) = ctx.scrubber.as_mut() {
            let chunk = body.as_deref().unwrap_or_default();
            let out = scrubber.push(chunk, end_of_stream);
            *body = (!out.is_empty() || end_of_stream).then(|| Bytes::from(out));
        }
        Ok(None)
    }

    /// Upstream failures answer 502, timeouts 504, in the same JSON shape as denials.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // A filter of ours that refused the upstream's response left its reason in the ctx.
        let Some(refusal) = ctx.refusal.take().or_else(|| self.classify_failure(e)) else {
            // The downstream connection is gone: nothing to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if matches!(refusal, Refusal::BadGateway(_) | Refusal::Timeout(_)) {
            self.metrics
                .upstream_errors
                .with_label_values(&[e.etype().as_str()])
                .inc();
        }
        let status = refusal.status();
        if session.response_written().is_none() && respond(session, ctx, &refusal).await.is_err() {
            tracing::debug!(
                request_id = ctx.request_id.as_str(),
                "could not send error response"
            );
        }
        ctx.refusal = Some(refusal);
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Runs once per request, whatever happened: metrics and the audit record.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let record = self.audit_record(session, ctx);
        self.metrics.request(record.decision, record.mode).inc();
        self.metrics
            .request_duration
            .observe(ctx.started.elapsed().as_secs_f64());
        self.audit.record(ctx.audit_slot.take(), record);
    }
}

impl Agentwall {
    /// What a proxying error means for the agent; `None` when the downstream is gone.
    fn classify_failure(&self, e: &Error) -> Option<Refusal> {
        Some(match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(400)) => Refusal::BadRequest(e.to_string()),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => return None,
            (ErrorSource::Downstream, kind) => Refusal::BadRequest(kind.as_str().to_string()),
            (
                _,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Refusal::Timeout(format!(
                "upstream did not answer within {:?}",
                self.upstream_timeout
            )),
            (_, kind) => Refusal::BadGateway(format!("upstream failed: {}", kind.as_str())),
        })
    }

    /// Admission (no network), then the egress guard. Any `Err` is answered without
    /// touching the upstream.
    async fn admit(&self, session: &Session, ctx: &mut RequestCtx) -> Result<(), Refusal> {
        let raw_head = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        let policies = self.policies.current().clone();
        let admitted = admission::admit(
            &self.identity,
            &policies,
            &self.routes,
            session.req_header(),
            raw_head.as_deref(),
            &mut ctx.admission,
        );
        ctx.policies = Some(policies);
        admitted?;
        let target = ctx
            .admission
            .target
            .as_ref()
            .ok_or_else(|| Refusal::BadRequest("no target".into()))?;
        ctx.peer = Some(self.egress.resolve(&target.host, target.port).await?);
        Ok(())
    }

    fn audit_record(&self, session: &Session, ctx: &RequestCtx) -> AuditRecord {
        let req = session.req_header();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.refusal.as_ref().map(Refusal::status))
            .unwrap_or(0);
        let (decision, reason) = match (&ctx.refusal, &ctx.admission.decision) {
            (Some(r), _) => (r.decision(), r.reason().to_string()),
            (None, Some(d)) if status >= 500 => (AuditDecision::Error, d.reason().to_string()),
            (None, Some(d)) => (AuditDecision::Allow, d.reason().to_string()),
            (None, None) => (AuditDecision::Error, String::new()),
        };
        let rule = ctx.admission.rule();
        let (scheme, host, port, path) = match &ctx.admission.target {
            Some(t) => (t.scheme.as_str(), t.host.clone(), t.port, t.path.clone()),
            None => (
                "",
                String::new(),
                0,
                String::from_utf8_lossy(req.raw_path()).into_owned(),
            ),
        };
        AuditRecord {
            id: 0,
            ts: format_time(SystemTime::now()),
            request_id: ctx.request_id.0.clone(),
            agent: ctx
                .admission
                .agent
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            client: session
                .client_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            mode: ctx.admission.mode,
            method: req.method.as_str().to_string(),
            scheme: scheme.to_string(),
            host,
            port,
            path,
            status,
            decision,
            policy: rule.map(|r| r.policy.clone()),
            rule: rule.map(|r| r.rule.clone()),
            reason,
            shadow: ctx.admission.shadow(),
            detectors: vec![],
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            duration_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
            upstream_ms: ctx
                .upstream_started
                .map(|t| t.elapsed().as_secs_f64() * 1000.0),
            policy_version: ctx
                .policies
                .as_ref()
                .map(|p| p.version.clone())
                .unwrap_or_default(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

/// Headers that carry the agent's identity or are meant for the proxy only.
fn strip_agent_headers(req: &mut RequestHeader) {
    let doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            n.starts_with("proxy-") || n == identity::AGENT_HEADER || n == identity::TOKEN_HEADER
        })
        .cloned()
        .collect();
    for name in doomed {
        req.remove_header(&name);
    }
}

/// Writes agentwall's own JSON answer.
async fn respond(session: &mut Session, ctx: &RequestCtx, refusal: &Refusal) -> Result<()> {
    let body = refusal.body(ctx.request_id.as_str());
    let mut resp = ResponseHeader::build(refusal.status(), Some(5))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    if refusal.is_denial() {
        resp.insert_header("x-agentwall-decision", "deny")?;
    }
    if let Some((name, value)) = refusal.extra_header() {
        resp.insert_header(name, value)?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}
