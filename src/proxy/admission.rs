//! The decision stages that need no network: framing checks, identity, target resolution
//! (normalize + route) and policy evaluation. The proxy and the `explain`/`test` tooling both
//! call `admit`, so what the tools report is what the proxy does.

use pingora::http::RequestHeader;

use super::refusal::Refusal;
use super::routes::{Route, RouteTable};
use crate::audit::ProxyMode;
use crate::identity::{AgentId, Identity, IdentityError, TokenSource};
use crate::policy::normalize::{self, NormalizeError, Target};
use crate::policy::{Decision, PolicySet, RequestFacts, Verdict};

/// What admission learned about a request, kept even when it is refused (for the audit).
#[derive(Debug)]
pub struct Admission {
    pub agent: Option<AgentId>,
    /// Which header carried the agent's token (stripped before forwarding).
    pub token_source: Option<TokenSource>,
    pub mode: ProxyMode,
    pub target: Option<Target>,
    pub route: Option<std::sync::Arc<Route>>,
    pub decision: Option<Decision>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            agent: None,
            token_source: None,
            mode: ProxyMode::Forward,
            target: None,
            route: None,
            decision: None,
        }
    }
}

impl Admission {
    /// The rule that decided, if a rule did.
    pub fn rule(&self) -> Option<&crate::policy::compile::RuleMeta> {
        self.decision.as_ref().and_then(|d| d.rule())
    }

    /// The monitor rule that would have changed the outcome, as `policy/rule:effect`.
    pub fn shadow(&self) -> Option<String> {
        self.decision
            .as_ref()?
            .shadow
            .as_ref()
            .map(|s| s.describe())
    }
}

/// Runs the stages in order; `Err` means the request is answered without an upstream.
/// `raw_head` is the request head as received (request line and headers), when known.
pub fn admit(
    identity: &Identity,
    policies: &PolicySet,
    routes: &RouteTable,
    req: &RequestHeader,
    raw_head: Option<&[u8]>,
    out: &mut Admission,
) -> Result<(), Refusal> {
    if let Some(raw) = raw_head {
        check_framing(raw)?;
    }
    // Absolute-form is the forward proxy (token in Proxy-Authorization); a path is a route.
    let forward = req.raw_path().first() != Some(&b'/');
    out.mode = if forward {
        ProxyMode::Forward
    } else {
        ProxyMode::Reverse
    };
    let who = identity.authenticate(req, forward).map_err(|e| match e {
        IdentityError::Unauthenticated(failure) => Refusal::Unauthenticated { failure, forward },
        other => Refusal::BadRequest(other.to_string()),
    })?;
    out.agent = Some(who.agent.clone());
    out.token_source = who.token_source;
    let agent = who.agent;
    let target = resolve_target(routes, req, out)?;
    let decision = policies.evaluate(&RequestFacts {
        agent: agent.as_str(),
        method: req.method.as_str(),
        scheme: target.scheme,
        host: &target.host,
        port: target.port,
        path: &target.path,
        path_without_params: target.path_without_params.as_deref(),
        query: target.query.as_deref(),
        headers: Some(&req.headers),
        claims: who.claims.as_deref(),
    });
    out.target = Some(target);
    out.decision = Some(decision.clone());
    match decision.verdict {
        Verdict::Allow => Ok(()),
        Verdict::Deny => Err(Refusal::Denied(decision)),
    }
}

/// Absolute-form is the forward proxy; origin-form must match a route, and policies then see
/// the request as the route's upstream will receive it.
fn resolve_target(
    routes: &RouteTable,
    req: &RequestHeader,
    out: &mut Admission,
) -> Result<Target, Refusal> {
    let raw = req.raw_path();
    if req.headers.get_all(http::header::HOST).iter().count() > 1 {
        return Err(Refusal::BadRequest("more than one Host header".into()));
    }
    if out.mode == ProxyMode::Forward {
        let host = req.headers.get(http::header::HOST).map(|h| h.as_bytes());
        return Ok(normalize::absolute_form(raw, host)?);
    }
    let (path, _, query) = normalize::path_and_query(raw)?;
    let (route, upstream_path) = routes.resolve(&path).ok_or_else(|| {
        Refusal::NoRoute(format!(
            "no route for {path}; use the proxy (absolute-form) or a configured route prefix"
        ))
    })?;
    let (path, path_without_params, _) = normalize::path_and_query(upstream_path.as_bytes())?;
    out.route = Some(std::sync::Arc::clone(route));
    Ok(Target {
        scheme: route.scheme,
        host: route.host.clone(),
        port: route.port,
        path,
        path_without_params,
        query,
    })
}

/// What the HTTP parser hides: a fragment in the request line (dropped before we see the
/// target) and both Content-Length and Transfer-Encoding (Content-Length is removed). Both
/// are ways two servers can read one request differently, so both are refused.
fn check_framing(raw: &[u8]) -> Result<(), NormalizeError> {
    let mut lines = raw.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let target = request_line
        .split(|&b| b == b' ')
        .nth(1)
        .unwrap_or_default();
    if target.contains(&b'#') {
        return Err(NormalizeError::Fragment);
    }
    let (mut length, mut chunked) = (false, false);
    for line in lines {
        let name = line
            .split(|&b| b == b':')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        length |= name.eq_ignore_ascii_case(b"content-length");
        chunked |= name.eq_ignore_ascii_case(b"transfer-encoding");
    }
    if length && chunked {
        return Err(NormalizeError::ConflictingLength);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert!(check_framing(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").is_ok());
        assert_eq!(
            check_framing(b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(NormalizeError::Fragment)
        );
        assert_eq!(
            check_framing(
                b"POST /a HTTP/1.1\r\ncontent-length: 3\r\nTransfer-Encoding : chunked\r\n\r\n"
            ),
            Err(NormalizeError::ConflictingLength)
        );
    }
}
