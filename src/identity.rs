//! Agent identity. With `[auth] mode = "jwt"` every request carries a signed token, verified
//! with pinned algorithms and configured keys (never keys named by the token), and the agent
//! id comes from a claim. With `mode = "none"` the agent names itself in `X-Agent-Id`
//! (development only).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use pingora::http::RequestHeader;
use serde_json::{Map, Value};

use crate::config::{AuthConfig, AuthMode, JwtConfig};

pub const AGENT_HEADER: &str = "x-agent-id";
pub const TOKEN_HEADER: &str = "x-agentwall-token";

/// An agent's id as policies and audit records see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentId(Arc<str>);

impl AgentId {
    pub fn anonymous() -> AgentId {
        AgentId(Arc::from("anonymous"))
    }

    /// An id of 1–128 letters, digits and `. _ - : @ /`.
    pub fn parse(text: &str) -> Option<AgentId> {
        let valid = !text.is_empty()
            && text.len() <= 128
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:@/".contains(&b));
        valid.then(|| AgentId(Arc::from(text)))
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

/// Where the token was found, so that exactly that header is stripped before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    ProxyAuthorization,
    Authorization,
    AgentwallToken,
}

/// Who is behind a request.
#[derive(Debug, Clone)]
pub struct Identified {
    pub agent: AgentId,
    /// Verified token claims (JWT mode only).
    pub claims: Option<Arc<Map<String, Value>>>,
    pub token_source: Option<TokenSource>,
}

/// Why a token was refused. Each has its own reason, in responses and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    AlgNone,
    AlgNotAllowed,
    KeyConfusion,
    UnknownKey,
    BadSignature,
    NoExpiry,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingAgentClaim,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthFailure {}

impl AuthFailure {
    /// The sentence an agent is shown.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "no token: send Proxy-Authorization: Bearer <token> (proxy) or Authorization: Bearer <token> (routes)",
            AuthFailure::Malformed => "the token is not a well-formed JWS compact JWT",
            AuthFailure::AlgNone => "unsigned tokens (alg none) are not accepted",
            AuthFailure::AlgNotAllowed => "the token's algorithm is not one this proxy accepts",
            AuthFailure::KeyConfusion => "an HMAC token cannot be verified with a public key",
            AuthFailure::UnknownKey => "no configured key matches the token's kid",
            AuthFailure::BadSignature => "the token signature is invalid",
            AuthFailure::NoExpiry => "the token has no exp claim",
            AuthFailure::Expired => "the token has expired",
            AuthFailure::NotYetValid => "the token is not valid yet (nbf)",
            AuthFailure::WrongIssuer => "the token's issuer is not accepted",
            AuthFailure::WrongAudience => "the token's audience is not this proxy",
            AuthFailure::MissingAgentClaim => "the token has no usable agent id claim",
        }
    }

    /// The metric label.
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::AlgNone => "alg_none",
            AuthFailure::AlgNotAllowed => "alg_not_allowed",
            AuthFailure::KeyConfusion => "key_confusion",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::NoExpiry => "no_expiry",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::MissingAgentClaim => "missing_agent_claim",
        }
    }
}

/// Why no identity could be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("X-Agent-Id must be 1-128 characters of letters, digits and . _ - : @ /")]
    BadAgentHeader,
    #[error("more than one X-Agent-Id header")]
    DuplicateAgentHeader,
    #[error("{0}")]
    Unauthenticated(AuthFailure),
}

/// How agents are identified, built from `[auth]`.
pub enum Identity {
    /// `X-Agent-Id`, or "anonymous".
    Header,
    /// A verified JWT.
    Jwt(Box<JwtVerifier>),
    /// A preset identity (the `explain`/`test` tools).
    Preset(Identified),
}

impl Identity {
    pub fn from_config(auth: &AuthConfig) -> Result<Identity, String> {
        match auth.mode {
            AuthMode::None => Ok(Identity::Header),
            AuthMode::Jwt => {
                let jwt = auth.jwt.as_ref().ok_or(
                    "auth.mode = \"jwt\" needs an [auth.jwt] table (algorithms and a key)",
                )?;
                Ok(Identity::Jwt(Box::new(JwtVerifier::new(jwt)?)))
            }
        }
    }

    /// Identifies the agent behind a request; `forward` selects where the token is read.
    pub fn authenticate(
        &self,
        req: &RequestHeader,
        forward: bool,
    ) -> Result<Identified, IdentityError> {
        match self {
            Identity::Header => from_agent_header(req),
            Identity::Preset(who) => Ok(who.clone()),
            Identity::Jwt(verifier) => {
                let (token, source) = bearer_token(req, forward)?;
                let verified = verifier
                    .verify(token)
                    .map_err(IdentityError::Unauthenticated)?;
                Ok(Identified {
                    agent: verified.agent.clone(),
                    claims: Some(Arc::clone(&verified.claims)),
                    token_source: Some(source),
                })
            }
        }
    }

    /// Watches key files that can change (JWKS).
    pub fn watch(&self) -> notify::Result<()> {
        match self {
            Identity::Jwt(v) => v.watch(),
            _ => Ok(()),
        }
    }
}

fn from_agent_header(req: &RequestHeader) -> Result<Identified, IdentityError> {
    let mut values = req.headers.get_all(AGENT_HEADER).iter();
    let agent = match values.next() {
        None => AgentId::anonymous(),
        Some(_) if values.next().is_some() => return Err(IdentityError::DuplicateAgentHeader),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(AgentId::parse)
            .ok_or(IdentityError::BadAgentHeader)?,
    };
    Ok(Identified {
        agent,
        claims: None,
        token_source: None,
    })
}

/// The bearer token: `Proxy-Authorization` through the forward proxy; `X-Agentwall-Token` or
/// `Authorization` on routes. A header present twice is malformed, not a choice.
fn bearer_token(req: &RequestHeader, forward: bool) -> Result<(&str, TokenSource), IdentityError> {
    let single = |name: &str| -> Result<Option<&str>, IdentityError> {
        let mut values = req.headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(IdentityError::Unauthenticated(AuthFailure::Malformed)),
            (Some(v), None) => v
                .to_str()
                .map(Some)
                .map_err(|_| IdentityError::Unauthenticated(AuthFailure::Malformed)),
        }
    };
    if forward {
        return match single("proxy-authorization")? {
            Some(v) => Ok((bearer(v)?, TokenSource::ProxyAuthorization)),
            None => Err(IdentityError::Unauthenticated(AuthFailure::Missing)),
        };
    }
    if let Some(token) = single(TOKEN_HEADER)? {
        let token = token.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        return Ok((token, TokenSource::AgentwallToken));
    }
    match single("authorization")? {
        Some(v) => Ok((bearer(v)?, TokenSource::Authorization)),
        None => Err(IdentityError::Unauthenticated(AuthFailure::Missing)),
    }
}

/// The token of an `Authorization`-style `Bearer <token>` value.
fn bearer(value: &str) -> Result<&str, IdentityError> {
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(IdentityError::Unauthenticated(AuthFailure::Malformed));
    }
    Ok(token.trim())
}

/// A token that passed every check, cached until it expires.
#[derive(Debug)]
pub struct Verified {
    pub agent: AgentId,
    pub claims: Arc<Map<String, Value>>,
    exp: u64,
    nbf: Option<u64>,
}

/// The keys tokens are checked against.
enum Keys {
    /// `secret` (HS*).
    Secret(DecodingKey),
    /// `public_key_file` (one PEM key).
    Pem(DecodingKey),
    /// `jwks_file`, by `kid`; reloaded when the file changes.
    Jwks {
        path: PathBuf,
        keys: ArcSwap<HashMap<String, (DecodingKey, Option<Algorithm>)>>,
    },
}

/// Verifies JWTs: pinned algorithms, configured keys, `exp`/`nbf`/`iss`/`aud`, agent claim.
pub struct JwtVerifier {
    algorithms: Vec<Algorithm>,
    keys: Arc<Keys>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    agent_claim: String,
    cache: Arc<TokenCache>,
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    use std::str::FromStr;
    if name.eq_ignore_ascii_case("none") {
        return Err("algorithm \"none\" is never accepted".into());
    }
    Algorithm::from_str(name).map_err(|_| {
        format!(
            "unknown algorithm {name:?}; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"
        )
    })
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn load_jwks(path: &Path) -> Result<HashMap<String, (DecodingKey, Option<Algorithm>)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a JWK set: {e}", path.display()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        use jsonwebtoken::jwk::{KeyOperations, PublicKeyUse};
        let for_signatures = !matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature)
            && jwk
                .common
                .key_operations
                .as_ref()
                .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
        if !for_signatures {
            continue;
        }
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("{}: key {kid:?}: {e}", path.display()))?;
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| parse_algorithm(&a.to_string()).ok());
        keys.insert(kid, (key, alg));
    }
    if keys.is_empty() {
        return Err(format!(
            "{}: the JWK set has no signature keys",
            path.display()
        ));
    }
    Ok(keys)
}

impl JwtVerifier {
    pub fn new(c: &JwtConfig) -> Result<JwtVerifier, String> {
        if c.algorithms.is_empty() {
            return Err("auth.jwt.algorithms: pin at least one algorithm, e.g. [\"RS256\"]".into());
        }
        let algorithms = c
            .algorithms
            .iter()
            .map(|a| parse_algorithm(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("auth.jwt.algorithms: {e}"))?;
        let hmac = algorithms.iter().filter(|a| is_hmac(**a)).count();
        if hmac != 0 && hmac != algorithms.len() {
            return Err(
                "auth.jwt.algorithms: do not mix HMAC (HS*) with public-key algorithms: \
                        a public key must never be usable as an HMAC secret"
                    .into(),
            );
        }
        let sources = [
            !c.secret.is_empty(),
            !c.public_key_file.is_empty(),
            !c.jwks_file.is_empty(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err("auth.jwt: set exactly one of secret, public_key_file, jwks_file".into());
        }
        let keys = if hmac != 0 && c.jwks_file.is_empty() {
            if c.secret.is_empty() {
                return Err(
                    "auth.jwt: HS* algorithms need secret = \"${env:AGENTWALL_JWT_SECRET}\" \
                            (or a jwks_file of oct keys)"
                        .into(),
                );
            }
            if c.secret.len() < 32 {
                return Err("auth.jwt.secret: use at least 32 bytes (e.g. `head -c 32 /dev/urandom | base64`)".into());
            }
            Keys::Secret(DecodingKey::from_secret(c.secret.as_bytes()))
        } else if !c.secret.is_empty() {
            return Err("auth.jwt.secret is for HS* algorithms; public-key algorithms need public_key_file or jwks_file".into());
        } else if !c.public_key_file.is_empty() {
            let pem = std::fs::read(&c.public_key_file)
                .map_err(|e| format!("auth.jwt.public_key_file {}: {e}", c.public_key_file))?;
            let family = algorithms[0].family();
            if algorithms.iter().any(|a| a.family() != family) {
                return Err(
                    "auth.jwt.algorithms: one public key serves one family (RS/PS, ES or EdDSA)"
                        .into(),
                );
            }
            let key = match family {
                jsonwebtoken::AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
                jsonwebtoken::AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
                jsonwebtoken::AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
                jsonwebtoken::AlgorithmFamily::Hmac => {
                    return Err(
                        "auth.jwt: HS* algorithms take a secret, not a public_key_file".into(),
                    )
                }
            }
            .map_err(|e| {
                format!(
                    "auth.jwt.public_key_file {}: not a {family:?} public key: {e}",
                    c.public_key_file
                )
            })?;
            Keys::Pem(key)
        } else if !c.jwks_file.is_empty() {
            let path = PathBuf::from(&c.jwks_file);
            let keys = load_jwks(&path).map_err(|e| format!("auth.jwt.jwks_file: {e}"))?;
            Keys::Jwks {
                path,
                keys: ArcSwap::from_pointee(keys),
            }
        } else {
            return Err("auth.jwt: public-key algorithms need public_key_file or jwks_file".into());
        };
        if c.agent_claim.is_empty() {
            return Err(
                "auth.jwt.agent_claim: name the claim that holds the agent id, e.g. \"sub\"".into(),
            );
        }
        Ok(JwtVerifier {
            algorithms,
            keys: Arc::new(keys),
            issuer: (!c.issuer.is_empty()).then(|| c.issuer.clone()),
            audience: (!c.audience.is_empty()).then(|| c.audience.clone()),
            leeway: c.leeway.0.as_secs(),
            agent_claim: c.agent_claim.clone(),
            cache: Arc::new(TokenCache::new(c.cache_size)),
        })
    }

    /// Checks a token, from the cache when it was verified before and has not expired.
    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, AuthFailure> {
        self.verify_at(token, unix_now())
    }

    /// `verify` as of `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Arc<Verified>, AuthFailure> {
        if let Some(hit) = self.cache.get(token) {
            self.check_times(hit.exp, hit.nbf, now)?;
            return Ok(hit);
        }
        let verified = Arc::new(self.verify_uncached(token, now)?);
        self.cache.insert(token, Arc::clone(&verified));
        Ok(verified)
    }

    fn check_times(&self, exp: u64, nbf: Option<u64>, now: u64) -> Result<(), AuthFailure> {
        if now > exp.saturating_add(self.leeway) {
            return Err(AuthFailure::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(AuthFailure::NotYetValid);
        }
        Ok(())
    }

    /// The signature layer: shape, header, pinned algorithm, key, signature. Returns the
    /// verified payload bytes.
    pub fn verify_signature(&self, token: &str) -> Result<Vec<u8>, AuthFailure> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthFailure::Malformed);
        };
        let header: Map<String, Value> = decode_json(header_b64)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AuthFailure::Malformed)?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthFailure::AlgNone);
        }
        if header.contains_key("crit") || header.get("b64").is_some_and(|b| b != &Value::Bool(true))
        {
            // No critical extensions are understood, and unencoded payloads are not JWTs.
            return Err(AuthFailure::Malformed);
        }
        let alg = match parse_algorithm(alg) {
            Ok(a) => a,
            Err(_) => return Err(AuthFailure::AlgNotAllowed),
        };
        let key = match &*self.keys {
            Keys::Secret(key) | Keys::Pem(key) => key.clone(),
            Keys::Jwks { keys, .. } => {
                let keys = keys.load();
                let kid = header.get("kid").and_then(Value::as_str);
                let entry = match kid {
                    Some(kid) => keys.get(kid),
                    None if keys.len() == 1 => keys.values().next(),
                    None => None,
                };
                let (key, key_alg) = entry.ok_or(AuthFailure::UnknownKey)?;
                if key_alg.is_some_and(|a| a != alg) {
                    return Err(AuthFailure::AlgNotAllowed);
                }
                key.clone()
            }
        };
        if is_hmac(alg) && key.family() != jsonwebtoken::AlgorithmFamily::Hmac {
            return Err(AuthFailure::KeyConfusion);
        }
        if !self.algorithms.contains(&alg) || key.family() != alg.family() {
            return Err(AuthFailure::AlgNotAllowed);
        }
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        // jsonwebtoken decodes the signature with the same strict base64url engine.
        let verified = jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &key, alg)
            .unwrap_or(false);
        if !verified {
            return Err(AuthFailure::BadSignature);
        }
        b64()
            .decode(payload_b64)
            .map_err(|_| AuthFailure::Malformed)
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<Verified, AuthFailure> {
        let payload = self.verify_signature(token)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| AuthFailure::Malformed)?;
        let number = |name: &str| -> Result<Option<u64>, AuthFailure> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|n| *n >= 0.0)
                    .map(|n| Some(n as u64))
                    .ok_or(AuthFailure::Malformed),
            }
        };
        let exp = number("exp")?.ok_or(AuthFailure::NoExpiry)?;
        let nbf = number("nbf")?;
        self.check_times(exp, nbf, now)?;
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(AuthFailure::WrongIssuer);
            }
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == audience,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !ok {
                return Err(AuthFailure::WrongAudience);
            }
        }
        let agent = claims
            .get(&self.agent_claim)
            .and_then(Value::as_str)
            .and_then(AgentId::parse)
            .ok_or(AuthFailure::MissingAgentClaim)?;
        Ok(Verified {
            agent,
            claims: Arc::new(claims),
            exp,
            nbf,
        })
    }

    /// Reloads the JWK set when its file changes; a bad file keeps the previous keys.
    pub fn watch(&self) -> notify::Result<()> {
        use notify::{RecursiveMode, Watcher};
        let Keys::Jwks { path, .. } = &*self.keys else {
            return Ok(());
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let keys = Arc::clone(&self.keys);
        let cache = Arc::clone(&self.cache);
        std::thread::Builder::new()
            .name("jwks-watch".into())
            .spawn(move || {
                let _keep_alive = watcher;
                let Keys::Jwks { path, keys } = &*keys else { return };
                while let Ok(event) = rx.recv() {
                    let ours = matches!(&event, Ok(e) if !e.kind.is_access() && e.paths.iter().any(|p| p.file_name() == path.file_name()));
                    if !ours {
                        continue;
                    }
                    while rx.recv_timeout(std::time::Duration::from_millis(150)).is_ok() {}
                    match load_jwks(path) {
                        Ok(new) => {
                            tracing::info!(keys = new.len(), "JWK set reloaded");
                            keys.store(Arc::new(new));
                            // A removed key must not live on in tokens verified with it.
                            cache.clear();
                        }
                        Err(e) => tracing::error!(error = %e, "JWK set reload rejected; previous keys stay active"),
                    }
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(())
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn decode_json(part: &str) -> Result<Map<String, Value>, AuthFailure> {
    let bytes = b64().decode(part).map_err(|_| AuthFailure::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthFailure::Malformed)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verified tokens by their text, in 16 independently locked shards; a full shard is
/// emptied (tokens are re-verified, never trusted longer than their `exp`).
struct TokenCache {
    shards: Vec<Mutex<HashMap<Box<str>, Arc<Verified>>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl TokenCache {
    fn new(capacity: usize) -> TokenCache {
        const SHARDS: usize = 16;
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, token: &str) -> &Mutex<HashMap<Box<str>, Arc<Verified>>> {
        let i = self.hasher.hash_one(token) as usize % self.shards.len();
        &self.shards[i]
    }

    fn get(&self, token: &str) -> Option<Arc<Verified>> {
        let shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        shard.get(token).cloned()
    }

    fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    fn insert(&self, token: &str, verified: Arc<Verified>) {
        let mut shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard {
            shard.clear();
        }
        shard.insert(Box::from(token), verified);
    }
}

/// Mints a development token with the configured HMAC secret (`agentwall token`).
pub fn mint(
    c: &JwtConfig,
    sub: &str,
    ttl: std::time::Duration,
    extra: &[(String, Value)],
) -> Result<String, String> {
    let alg = c
        .algorithms
        .iter()
        .filter_map(|a| parse_algorithm(a).ok())
        .find(|a| is_hmac(*a))
        .ok_or(
            "agentwall token mints with an HMAC key: pin an HS* algorithm and set auth.jwt.secret",
        )?;
    if c.secret.is_empty() {
        return Err("auth.jwt.secret is not set".into());
    }
    let now = unix_now();
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::String(sub.to_string()));
    if c.agent_claim != "sub" {
        claims.insert(c.agent_claim.clone(), Value::String(sub.to_string()));
    }
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + ttl.as_secs()).into());
    if !c.issuer.is_empty() {
        claims.insert("iss".into(), Value::String(c.issuer.clone()));
    }
    if !c.audience.is_empty() {
        claims.insert("aud".into(), Value::String(c.audience.clone()));
    }
    for (k, v) in extra {
        claims.insert(k.clone(), v.clone());
    }
    let key = jsonwebtoken::EncodingKey::from_secret(c.secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).map_err(|e| e.to_string())
}
