//! Every way agentwall answers a request itself, and the JSON an agent reads to act on it.

use serde::Serialize;

use crate::audit::AuditDecision;
use crate::egress::EgressError;
use crate::identity::AuthFailure;
use crate::policy::normalize::NormalizeError;
use crate::policy::Decision;

/// A request agentwall answers without forwarding (or after the upstream failed).
#[derive(Debug)]
pub enum Refusal {
    /// Malformed or ambiguous target, or an unusable agent header (400).
    BadRequest(String),
    /// No valid token: 407 through the forward proxy, 401 on routes.
    Unauthenticated { failure: AuthFailure, forward: bool },
    /// A policy denied it (403).
    Denied(Decision),
    /// The destination address is not allowed (403).
    Egress(String),
    /// No route serves this origin-form path (404).
    NoRoute(String),
    /// The destination could not be resolved or reached (502).
    BadGateway(String),
    /// The upstream did not answer in time (504).
    Timeout(String),
    /// agentwall cannot take the request now (503, with Retry-After).
    Unavailable(String),
}

impl From<NormalizeError> for Refusal {
    fn from(e: NormalizeError) -> Refusal {
        Refusal::BadRequest(e.to_string())
    }
}

impl From<EgressError> for Refusal {
    fn from(e: EgressError) -> Refusal {
        match e {
            EgressError::Forbidden { .. } => Refusal::Egress(e.to_string()),
            EgressError::Resolve { .. } => Refusal::BadGateway(e.to_string()),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    reason: &'a str,
    request_id: &'a str,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Unauthenticated { forward: true, .. } => 407,
            Refusal::Unauthenticated { forward: false, .. } => 401,
            Refusal::Denied(_) | Refusal::Egress(_) => 403,
            Refusal::NoRoute(_) => 404,
            Refusal::BadGateway(_) => 502,
            Refusal::Timeout(_) => 504,
            Refusal::Unavailable(_) => 503,
        }
    }

    pub fn decision(&self) -> AuditDecision {
        match self {
            Refusal::BadGateway(_) | Refusal::Timeout(_) | Refusal::Unavailable(_) => {
                AuditDecision::Error
            }
            _ => AuditDecision::Deny,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Refusal::Denied(d) => d.reason(),
            Refusal::Unauthenticated { failure, .. } => failure.message(),
            Refusal::BadRequest(r)
            | Refusal::Egress(r)
            | Refusal::NoRoute(r)
            | Refusal::BadGateway(r)
            | Refusal::Timeout(r)
            | Refusal::Unavailable(r) => r,
        }
    }

    fn error_code(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Unauthenticated { .. } => "unauthenticated",
            Refusal::Denied(_) | Refusal::Egress(_) => "denied",
            Refusal::NoRoute(_) => "not_found",
            Refusal::BadGateway(_) => "bad_gateway",
            Refusal::Timeout(_) => "gateway_timeout",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    /// The JSON body, e.g.
    /// `{"error":"denied","policy":"p","rule":"r","reason":"…","request_id":"…"}`.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        let rule = match self {
            Refusal::Denied(d) => d.rule(),
            _ => None,
        };
        let body = Body {
            error: self.error_code(),
            policy: rule.map(|r| r.policy.as_str()),
            rule: rule.map(|r| r.rule.as_str()),
            reason: self.reason(),
            request_id,
        };
        let mut out = serde_json::to_vec(&body).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The extra header the refusal carries: an authentication challenge, or when to retry.
    pub fn extra_header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Refusal::Unauthenticated { forward: true, .. } => {
                Some(("proxy-authenticate", "Bearer"))
            }
            Refusal::Unauthenticated { forward: false, .. } => Some(("www-authenticate", "Bearer")),
            Refusal::Unavailable(_) => Some(("retry-after", "1")),
            _ => None,
        }
    }

    /// Whether to mark the response `X-Agentwall-Decision: deny`.
    pub fn is_denial(&self) -> bool {
        self.decision() == AuditDecision::Deny
    }
}
