//! The audit record (DESIGN §7) and its hash.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The outcome recorded for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDecision {
    /// Forwarded.
    Allow = 0,
    /// Refused by agentwall (policy, malformed target, egress, no route).
    Deny = 1,
    /// Allowed, but the upstream or agentwall failed.
    Error = 2,
}

impl AuditDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allow => "allow",
            AuditDecision::Deny => "deny",
            AuditDecision::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<AuditDecision> {
        match s {
            "allow" => Some(AuditDecision::Allow),
            "deny" => Some(AuditDecision::Deny),
            "error" => Some(AuditDecision::Error),
            _ => None,
        }
    }
}

/// How the request reached agentwall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// Absolute-form through the forward proxy.
    Forward = 0,
    /// Inside a CONNECT tunnel.
    Connect = 1,
    /// Through a `[[routes]]` prefix.
    Reverse = 2,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Forward => "forward",
            ProxyMode::Connect => "connect",
            ProxyMode::Reverse => "reverse",
        }
    }
}

/// One request's audit record. Never holds a credential or a body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number in the store, assigned by the writer.
    pub id: u64,
    /// RFC 3339, UTC, microseconds.
    pub ts: String,
    pub request_id: String,
    pub agent: String,
    pub client: String,
    pub mode: ProxyMode,
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub status: u16,
    pub decision: AuditDecision,
    pub policy: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
    pub shadow: Option<String>,
    pub detectors: Vec<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub policy_version: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// sha256 over the record's JSON with `hash` empty; `prev_hash` chains it to its
    /// predecessor.
    pub fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let bytes = serde_json::to_vec(&unhashed).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Assigns the record its place in the chain and returns its stored JSON, serializing
    /// once: `hash` is the last field, so the digest is spliced into the hashed bytes.
    pub fn seal(&mut self, id: u64, prev_hash: String) -> Vec<u8> {
        self.id = id;
        self.prev_hash = prev_hash;
        self.hash.clear();
        let mut json = serde_json::to_vec(&*self).unwrap_or_default();
        let digest = hex::encode(Sha256::digest(&json));
        debug_assert!(json.ends_with(br#""hash":""}"#));
        let at = json.len().saturating_sub(2);
        json.splice(at..at, digest.bytes());
        self.hash = digest;
        json
    }
}

/// RFC 3339 with microseconds in UTC, e.g. `2026-11-22T03:33:24.123456Z`.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

pub fn serialize_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

/// Accepts an RFC 3339 time or a duration meaning "that long ago" (`15m`, `24h`).
pub fn parse_time_bound(text: &str) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Some(t);
    }
    let ago = humantime::parse_duration(text).ok()?;
    SystemTime::now().checked_sub(ago)
}

pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_json_carries_the_hash_of_the_unhashed_record() {
        let mut r: AuditRecord = serde_json::from_str(
            r#"{"id":0,"ts":"2026-11-22T03:33:24.123456Z","request_id":"r","agent":"a","client":"c",
            "mode":"forward","method":"GET","scheme":"http","host":"h","port":80,"path":"/",
            "status":200,"decision":"allow","policy":null,"rule":null,"reason":"","shadow":null,
            "detectors":[],"bytes_in":0,"bytes_out":0,"duration_ms":1.5,"upstream_ms":null,
            "policy_version":"v","prev_hash":"","hash":""}"#,
        )
        .unwrap();
        let json = r.seal(7, "abc".into());
        let stored: AuditRecord = serde_json::from_slice(&json).unwrap();
        assert_eq!(stored, r);
        assert_eq!((stored.id, stored.prev_hash.as_str()), (7, "abc"));
        assert_eq!(stored.hash, stored.compute_hash());
        assert_eq!(stored.hash.len(), 64);
    }
}
