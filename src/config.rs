//! The runtime configuration: model, `${env:}`/`${file:}` expansion and validation.
//!
//! Every key has a default, so an empty file is a valid (loopback-only) configuration.
//! Unknown keys are errors, reported as `file:line:col: message`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::egress::Cidr;

/// A configuration error, always naming the file and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        path: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// A duration written like "100ms", "30s", "1h" or "30d".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?} ({e}); write e.g. \"100ms\", \"30s\", \"1h\", \"30d\""
                ))
            })
    }
}

/// A size written like "64KiB", "1MiB", "1GiB" or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Option<ByteSize> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" => 1 << 10,
            "MiB" | "M" | "MB" => 1 << 20,
            "GiB" | "G" | "GB" => 1 << 30,
            "TiB" | "T" | "TB" => 1 << 40,
            _ => return None,
        };
        n.checked_mul(mult).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {t:?}; write e.g. \"64KiB\", \"1MiB\", \"1GiB\""
                ))
            }),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub policies: PoliciesConfig,
    pub audit: AuditConfig,
    pub auth: AuthConfig,
    pub inspect: InspectConfig,
    pub egress: EgressConfig,
    pub interception: InterceptionConfig,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    pub listen: Vec<String>,
    pub tls_listen: Vec<String>,
    pub tls_cert: String,
    pub tls_key: String,
    pub upstream_timeout: HumanDuration,
    pub upstream_ca: String,
    pub grace_period: HumanDuration,
    /// Worker threads for the proxy service; 0 = one per core.
    pub threads: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: vec!["127.0.0.1:8080".into()],
            tls_listen: vec![],
            tls_cert: String::new(),
            tls_key: String::new(),
            upstream_timeout: HumanDuration(Duration::from_secs(30)),
            upstream_ca: String::new(),
            grace_period: HumanDuration(Duration::from_secs(5)),
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: String,
    pub token: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9090".into(),
            token: String::new(),
        }
    }
}

/// What happens when no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultEffect {
    Allow,
    #[default]
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesConfig {
    pub dir: PathBuf,
    pub default_effect: DefaultEffect,
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        PoliciesConfig {
            dir: PathBuf::from("policies"),
            default_effect: DefaultEffect::Deny,
        }
    }
}

/// What the request path does when the audit queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// Wait briefly for room; nothing is lost.
    #[default]
    Block,
    /// Drop the record and count it.
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub retention: HumanDuration,
    pub retention_deny: HumanDuration,
    pub max_bytes: ByteSize,
    pub flush_interval: HumanDuration,
    pub queue: usize,
    pub on_full: OnFull,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: PathBuf::from("data/audit"),
            retention: HumanDuration(Duration::from_secs(30 * 86400)),
            retention_deny: HumanDuration(Duration::from_secs(90 * 86400)),
            max_bytes: ByteSize(1 << 30),
            flush_interval: HumanDuration(Duration::from_millis(100)),
            queue: 65536,
            on_full: OnFull::Block,
        }
    }
}

/// How agents are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Agent id from the `X-Agent-Id` header (development only).
    #[default]
    None,
    /// A signed JWT is required.
    Jwt,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub jwt: Option<JwtConfig>,
}

/// `[auth.jwt]`: how tokens are verified (keys are loaded and checked by
/// `identity::Identity::from_config`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Pinned: a token whose header names another algorithm is rejected.
    pub algorithms: Vec<String>,
    /// HMAC secret (HS*), usually `${env:AGENTWALL_JWT_SECRET}`.
    pub secret: String,
    /// PEM public key (RS*, PS*, ES*, EdDSA).
    pub public_key_file: String,
    /// JWK set, keys looked up by `kid`; reloaded when the file changes.
    pub jwks_file: String,
    /// When set, `iss` must equal it.
    pub issuer: String,
    /// When set, `aud` must be or contain it.
    pub audience: String,
    pub leeway: HumanDuration,
    /// The claim holding the agent id.
    pub agent_claim: String,
    /// Verified tokens remembered (until their `exp`).
    pub cache_size: usize,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithms: vec![],
            secret: String::new(),
            public_key_file: String::new(),
            jwks_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: HumanDuration(Duration::from_secs(30)),
            agent_claim: "sub".into(),
            cache_size: 10_000,
        }
    }
}

// The secret must never reach a log line.
impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.algorithms)
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "[REDACTED]"
                },
            )
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("agent_claim", &self.agent_claim)
            .field("cache_size", &self.cache_size)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectConfig {
    pub max_body_bytes: ByteSize,
}

impl Default for InspectConfig {
    fn default() -> Self {
        InspectConfig {
            max_body_bytes: ByteSize(1 << 20),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    pub deny_private: bool,
    pub allow_cidrs: Vec<Cidr>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            deny_private: true,
            allow_cidrs: vec![],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterceptionConfig {
    pub enabled: bool,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub hosts: Vec<String>,
}

impl Default for InterceptionConfig {
    fn default() -> Self {
        InterceptionConfig {
            enabled: false,
            ca_cert: PathBuf::from("data/ca/ca.pem"),
            ca_key: PathBuf::from("data/ca/ca.key"),
            hosts: vec!["**".into()],
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_true")]
    pub scrub_response: bool,
}

// Header values are credentials: never print them.
impl fmt::Debug for RouteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteConfig")
            .field("prefix", &self.prefix)
            .field("upstream", &self.upstream)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("scrub_response", &self.scrub_response)
            .finish()
    }
}

fn default_true() -> bool {
    true
}

impl Config {
    /// Reads, expands and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Config::parse(&display, &text)
    }

    /// Parses configuration text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
        // First pass on the text as written, so shape errors carry line numbers.
        let _: Config = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        // Second pass on the expanded tree: `${env:}`/`${file:}` may only change string values.
        let mut tree: toml::Table =
            toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        for (key, value) in tree.iter_mut() {
            expand_value(origin, key, value)?;
        }
        let config =
            Config::deserialize(toml::Value::Table(tree)).map_err(|e| ConfigError::Invalid {
                path: origin.to_string(),
                key: "(expanded value)".into(),
                message: e.message().to_string(),
            })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: origin.to_string(),
            key: key.to_string(),
            message,
        };
        if self.proxy.listen.is_empty() && self.proxy.tls_listen.is_empty() {
            return Err(invalid(
                "proxy.listen",
                "at least one listen address is needed".into(),
            ));
        }
        for addr in &self.proxy.listen {
            parse_listen(addr).map_err(|m| invalid("proxy.listen", m))?;
        }
        if !self.proxy.tls_listen.is_empty() {
            return Err(invalid(
                "proxy.tls_listen",
                "TLS listeners are not supported by this version yet; remove the key".into(),
            ));
        }
        if !self.proxy.upstream_ca.is_empty() {
            return Err(invalid(
                "proxy.upstream_ca",
                "extra upstream roots are not supported by this version yet; remove the key".into(),
            ));
        }
        let admin = parse_listen(&self.admin.listen).map_err(|m| invalid("admin.listen", m))?;
        if !admin.ip().is_loopback() && self.admin.token.is_empty() {
            return Err(invalid(
                "admin.token",
                format!(
                    "the admin listener {} is not on loopback, so a token is required; set [admin] token = \"${{env:AGENTWALL_ADMIN_TOKEN}}\"",
                    self.admin.listen
                ),
            ));
        }
        if self.auth.mode == AuthMode::Jwt && self.auth.jwt.is_none() {
            return Err(invalid(
                "auth.jwt",
                "auth.mode = \"jwt\" needs an [auth.jwt] table: algorithms and one of secret, public_key_file, jwks_file".into(),
            ));
        }
        if self.interception.enabled {
            return Err(invalid(
                "interception.enabled",
                "CONNECT interception is not supported by this version yet; set it to false".into(),
            ));
        }
        if self.audit.queue == 0 {
            return Err(invalid("audit.queue", "must be at least 1".into()));
        }
        if self.audit.flush_interval.0.is_zero() {
            return Err(invalid(
                "audit.flush_interval",
                "must be more than 0".into(),
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            crate::proxy::routes::Route::from_config(route)
                .map_err(|m| invalid(&format!("routes[{i}]"), m))?;
        }
        Ok(())
    }
}

fn parse_listen(addr: &str) -> Result<SocketAddr, String> {
    addr.parse::<SocketAddr>().map_err(|_| {
        format!("invalid listen address {addr:?}; write IP:PORT, e.g. \"127.0.0.1:8080\"")
    })
}

fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
    ConfigError::Parse {
        path: origin.to_string(),
        line,
        col,
        message: e.message().trim().to_string(),
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

fn expand_value(origin: &str, key: &str, value: &mut toml::Value) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => {
            *s = expand(s).map_err(|message| ConfigError::Invalid {
                path: origin.to_string(),
                key: key.to_string(),
                message,
            })?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(origin, &format!("{key}[{i}]"), item)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                expand_value(origin, &format!("{key}.{k}"), v)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands `${env:NAME}` and `${file:PATH}` references in a string value.
///
/// Errors name the variable or file, never a value, since values are often secrets.
pub fn expand(input: &str) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated \"${\" (write ${env:NAME} or ${file:PATH})".to_string())?;
        let reference = &after[..end];
        let value = if let Some(name) = reference.strip_prefix("env:") {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?
        } else if let Some(path) = reference.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {path}: {e}"))?
                .trim_end_matches(['\r', '\n'])
                .to_string()
        } else {
            return Err(format!(
                "unknown reference \"${{{reference}}}\"; write ${{env:NAME}} or ${{file:PATH}}"
            ));
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_valid_and_loopback_only() {
        let c = Config::parse("t.toml", "").unwrap();
        assert_eq!(c.proxy.listen, vec!["127.0.0.1:8080"]);
        assert_eq!(c.admin.listen, "127.0.0.1:9090");
        assert_eq!(c.policies.default_effect, DefaultEffect::Deny);
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let err = Config::parse("c.toml", "[proxy]\nlisten = []\nlistne = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:3:"), "{err}");
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(ByteSize::parse("64KiB"), Some(ByteSize(65536)));
        assert_eq!(ByteSize::parse("1GiB"), Some(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("12XB"), None);
        let c = Config::parse(
            "t",
            "[audit]\nflush_interval = \"250ms\"\nretention = \"30d\"\n",
        )
        .unwrap();
        assert_eq!(c.audit.flush_interval.0, Duration::from_millis(250));
        assert_eq!(c.audit.retention.0, Duration::from_secs(30 * 86400));
        let err = Config::parse("t", "[audit]\nflush_interval = \"soon\"\n").unwrap_err();
        assert!(err.to_string().starts_with("t:2:"), "{err}");
    }

    #[test]
    fn env_and_file_references_expand() {
        std::env::set_var("AGENTWALL_TEST_EXPAND", "s3cret");
        assert_eq!(
            expand("Bearer ${env:AGENTWALL_TEST_EXPAND}").unwrap(),
            "Bearer s3cret"
        );
        let err = expand("${env:AGENTWALL_TEST_UNSET_VAR}").unwrap_err();
        assert!(err.contains("AGENTWALL_TEST_UNSET_VAR"));
        assert!(expand("${nope:x}").is_err());
    }

    #[test]
    fn public_admin_without_token_is_refused() {
        let err = Config::parse("t", "[admin]\nlisten = \"0.0.0.0:9090\"\n").unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
    }
}
