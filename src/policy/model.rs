//! The policy file format as users write it (`policies/*.toml`, one policy per file).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// Whether a match takes effect or is only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Matches decide the request.
    #[default]
    Enforce,
    /// Matches never block; a match that would have changed the outcome is audited as shadow.
    Monitor,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

/// One policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Defaults to the file stem.
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub description: String,
    /// Globs over the agent id; omitted = every agent.
    pub agents: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub rules: Vec<Spanned<RuleSpec>>,
}

/// One `[[rules]]` entry. Every dimension that is given must match; within a list any element
/// matches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: Spanned<String>,
    pub effect: Effect,
    pub reason: Option<String>,
    pub mode: Option<Mode>,
    pub schemes: Option<Vec<Spanned<String>>>,
    pub hosts: Option<Vec<Spanned<String>>>,
    pub ports: Option<Vec<Spanned<i64>>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub paths: Option<Vec<Spanned<String>>>,
    /// Query parameter name → glob(s) on its decoded value.
    pub query: Option<BTreeMap<String, Spanned<OneOrMany>>>,
    /// Header name (case-insensitive) → glob(s) on its value (case-insensitive).
    pub headers: Option<BTreeMap<String, Spanned<OneOrMany>>>,
    /// JWT claim name → glob(s) on its value (non-strings by their JSON text).
    pub claims: Option<BTreeMap<String, Spanned<OneOrMany>>>,
}

/// A glob, or a list of globs of which any may match.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}
