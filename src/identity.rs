//! Agent identity. With `[auth] mode = "none"` the agent names itself in `X-Agent-Id`
//! (development only); JWT verification arrives with `mode = "jwt"`.

use std::fmt;
use std::sync::Arc;

use pingora::http::RequestHeader;

pub const AGENT_HEADER: &str = "x-agent-id";

/// An agent's id as policies and audit records see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentId(Arc<str>);

impl AgentId {
    pub fn anonymous() -> AgentId {
        AgentId(Arc::from("anonymous"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why no identity could be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("X-Agent-Id must be 1-128 characters of letters, digits and . _ - : @ /")]
    BadAgentHeader,
    #[error("more than one X-Agent-Id header")]
    DuplicateAgentHeader,
}

/// Identifies the agent behind a request.
pub fn authenticate(req: &RequestHeader) -> Result<AgentId, IdentityError> {
    let mut values = req.headers.get_all(AGENT_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(AgentId::anonymous());
    };
    if values.next().is_some() {
        return Err(IdentityError::DuplicateAgentHeader);
    }
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:@/".contains(b));
    if !valid {
        return Err(IdentityError::BadAgentHeader);
    }
    // Checked ASCII above.
    let text = std::str::from_utf8(bytes).map_err(|_| IdentityError::BadAgentHeader)?;
    Ok(AgentId(Arc::from(text)))
}
