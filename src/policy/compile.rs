//! Compiles parsed policy files into matchers, validating every field with a precise
//! `file:line: message`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use toml::Spanned;

use super::model::{Effect, Mode, OneOrMany, PolicyFile, RuleSpec};
use super::normalize::{normalize_host, Scheme};
use crate::config::{line_col, DefaultEffect};

/// A policy file problem, located as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// What a decision names: the policy, the rule and the reason given to the agent.
#[derive(Debug)]
pub struct RuleMeta {
    pub policy: String,
    pub rule: String,
    /// `policy/rule`, as shown in audit records and responses.
    pub qualified: String,
    pub reason: String,
    pub effect: Effect,
    pub mode: Mode,
}

/// One compiled rule. `None` dimensions match anything.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub meta: Arc<RuleMeta>,
    /// Index of its policy in `PolicySet::policies`.
    pub policy: usize,
    pub schemes: Option<Vec<Scheme>>,
    pub hosts: Option<Vec<HostPattern>>,
    pub ports: Option<Vec<u16>>,
    pub methods: Option<Vec<String>>,
    pub paths: Option<GlobSet>,
    pub query: Option<Vec<ValueMatcher>>,
    pub headers: Option<Vec<ValueMatcher>>,
    pub claims: Option<Vec<ValueMatcher>>,
}

/// A named value (query parameter, header, claim) and the globs its value must match.
#[derive(Debug)]
pub(crate) struct ValueMatcher {
    /// Headers: lowercase.
    pub name: String,
    pub globs: GlobSet,
}

/// One compiled policy: who it applies to.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    pub name: String,
    pub agents: Option<GlobSet>,
}

/// Which rules can match a host, so evaluation looks at a few rules, not all of them.
/// Every rule is listed under each of its host patterns: exact hosts by name, label globs by
/// the literal labels they end in (`*.github.com` under `github.com`), and rules without a
/// host dimension (or with `**`, or a glob in the last label) under `any`. Lists hold rule
/// indices in ascending order.
#[derive(Debug, Default)]
pub(crate) struct HostIndex {
    exact: std::collections::HashMap<String, Vec<u32>>,
    suffix: std::collections::HashMap<String, Vec<u32>>,
    any: Vec<u32>,
}

impl HostIndex {
    fn build(rules: &[CompiledRule]) -> HostIndex {
        let mut index = HostIndex::default();
        for (i, rule) in rules.iter().enumerate() {
            let i = i as u32;
            let Some(hosts) = &rule.hosts else {
                index.any.push(i);
                continue;
            };
            for pattern in hosts {
                let list = match pattern.literal_suffix() {
                    Some(HostKey::Exact(h)) => index.exact.entry(h.to_string()).or_default(),
                    Some(HostKey::Suffix(s)) => index.suffix.entry(s).or_default(),
                    None => &mut index.any,
                };
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        index
    }

    /// Calls `visit` with every list of rules that may match `host`.
    pub fn candidates<'a>(&'a self, host: &str, mut visit: impl FnMut(&'a [u32])) {
        if let Some(list) = self.exact.get(host) {
            visit(list);
        }
        if !self.suffix.is_empty() {
            let mut rest = host;
            while let Some((_, tail)) = rest.split_once('.') {
                if let Some(list) = self.suffix.get(tail) {
                    visit(list);
                }
                rest = tail;
            }
        }
        visit(&self.any);
    }
}

/// A summary of a loaded policy, for `/v1/policies`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicySummary {
    pub name: String,
    pub file: String,
    pub description: String,
    pub mode: &'static str,
    pub rules: usize,
}

/// Every loaded policy, compiled, with the version stamped on audit records.
#[derive(Debug)]
pub struct PolicySet {
    pub(crate) policies: Vec<CompiledPolicy>,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) index: HostIndex,
    /// Whether any rule has a `query` dimension (the query is then parsed once per request).
    pub(crate) uses_query: bool,
    pub default_effect: DefaultEffect,
    /// `sha256:` over the loaded files' names and contents.
    pub version: String,
    pub summaries: Vec<PolicySummary>,
}

impl PolicySet {
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Loads every `*.toml` file directly in `dir` (hidden files are skipped: editors write
    /// their temporaries there). All errors are returned, not just the first.
    pub fn load_dir(
        dir: &Path,
        default_effect: DefaultEffect,
    ) -> Result<PolicySet, Vec<PolicyError>> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![PolicyError {
                file: dir.display().to_string(),
                line: 0,
                message: format!("cannot read policy directory: {e}"),
            }]
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "toml")
                    && p.is_file()
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        paths.sort();
        let mut sources = Vec::with_capacity(paths.len());
        let mut errors = Vec::new();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path.display().to_string(), text)),
                Err(e) => errors.push(PolicyError {
                    file: path.display().to_string(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        PolicySet::compile(&sources, default_effect)
    }

    /// Compiles `(file name, text)` pairs into one set.
    pub fn compile(
        sources: &[(String, String)],
        default_effect: DefaultEffect,
    ) -> Result<PolicySet, Vec<PolicyError>> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let mut errors = Vec::new();
        let mut policies = Vec::new();
        let mut rules = Vec::new();
        let mut summaries = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        for (file, text) in sources {
            hasher.update(file.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            let mut ctx = FileCtx {
                file,
                text,
                errors: &mut errors,
            };
            let parsed: PolicyFile = match toml::from_str(text) {
                Ok(p) => p,
                Err(e) => {
                    let line = e.span().map_or(1, |s| line_col(text, s.start).0);
                    ctx.errors.push(PolicyError {
                        file: file.clone(),
                        line,
                        message: e.message().trim().to_string(),
                    });
                    continue;
                }
            };
            if let Some(compiled) = ctx.policy(parsed, policies.len(), &mut names) {
                summaries.push(PolicySummary {
                    name: compiled.policy.name.clone(),
                    file: file.clone(),
                    description: compiled.description,
                    mode: compiled.mode.as_str(),
                    rules: compiled.rules.len(),
                });
                policies.push(compiled.policy);
                rules.extend(compiled.rules);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(PolicySet {
            index: HostIndex::build(&rules),
            uses_query: rules.iter().any(|r| r.query.is_some()),
            policies,
            rules,
            default_effect,
            version: format!("sha256:{}", hex::encode(hasher.finalize())),
            summaries,
        })
    }
}

/// A compiled policy file, before it joins the set.
struct CompiledFile {
    policy: CompiledPolicy,
    rules: Vec<CompiledRule>,
    description: String,
    mode: Mode,
}

struct FileCtx<'a> {
    file: &'a str,
    text: &'a str,
    errors: &'a mut Vec<PolicyError>,
}

impl FileCtx<'_> {
    fn error_at(&mut self, span: std::ops::Range<usize>, message: String) {
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: line_col(self.text, span.start).0,
            message,
        });
    }

    fn policy(
        &mut self,
        parsed: PolicyFile,
        index: usize,
        names: &mut HashSet<String>,
    ) -> Option<CompiledFile> {
        let before = self.errors.len();
        let stem = Path::new(self.file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("policy")
            .to_string();
        let (name, name_span) = match &parsed.name {
            Some(n) => (n.get_ref().clone(), n.span()),
            None => (stem, 0..0),
        };
        if !valid_id(&name) {
            self.error_at(
                name_span.clone(),
                format!("invalid policy name {name:?}: use letters, digits, '-', '_' or '.'"),
            );
        }
        if !names.insert(name.clone()) {
            self.error_at(
                name_span,
                format!("duplicate policy name {name:?}: names must be unique across files"),
            );
        }
        let agents = parsed
            .agents
            .as_ref()
            .and_then(|globs| self.globset(globs, false, "agent"));
        let mut rule_ids = HashSet::new();
        let mut rules = Vec::with_capacity(parsed.rules.len());
        for spanned in &parsed.rules {
            let span = spanned.span();
            let spec = spanned.get_ref();
            if let Some(rule) = self.rule(&name, index, parsed.mode, spec, span, &mut rule_ids) {
                rules.push(rule);
            }
        }
        (self.errors.len() == before).then_some(CompiledFile {
            policy: CompiledPolicy { name, agents },
            rules,
            description: parsed.description,
            mode: parsed.mode,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn rule(
        &mut self,
        policy: &str,
        policy_index: usize,
        policy_mode: Mode,
        spec: &RuleSpec,
        span: std::ops::Range<usize>,
        ids: &mut HashSet<String>,
    ) -> Option<CompiledRule> {
        let before = self.errors.len();
        let id = spec.id.get_ref();
        if !valid_id(id) {
            self.error_at(
                spec.id.span(),
                format!("invalid rule id {id:?}: use letters, digits, '-', '_' or '.'"),
            );
        }
        if !ids.insert(id.clone()) {
            self.error_at(
                spec.id.span(),
                format!("duplicate rule id {id:?} in policy {policy:?}"),
            );
        }
        let dims = [
            spec.schemes.is_some(),
            spec.hosts.is_some(),
            spec.ports.is_some(),
            spec.methods.is_some(),
            spec.paths.is_some(),
            spec.query.is_some(),
            spec.headers.is_some(),
            spec.claims.is_some(),
        ];
        if !dims.contains(&true) {
            self.error_at(
                span,
                format!(
                    "rule {id:?} has no match dimension (schemes, hosts, ports, methods, paths, \
                     query, headers, claims); write hosts = [\"**\"] to match everything"
                ),
            );
        }
        let schemes = spec.schemes.as_ref().map(|list| {
            list.iter()
                .filter_map(|s| {
                    let parsed = Scheme::parse(s.get_ref());
                    if parsed.is_none() {
                        self.error_at(
                            s.span(),
                            format!(
                                "invalid scheme {:?}: write \"http\" or \"https\"",
                                s.get_ref()
                            ),
                        );
                    }
                    parsed
                })
                .collect()
        });
        let hosts = spec.hosts.as_ref().map(|list| {
            list.iter()
                .filter_map(|h| match HostPattern::parse(h.get_ref()) {
                    Ok(p) => Some(p),
                    Err(m) => {
                        self.error_at(h.span(), m);
                        None
                    }
                })
                .collect()
        });
        let ports = spec.ports.as_ref().map(|list| {
            list.iter()
                .filter_map(|p| match u16::try_from(*p.get_ref()) {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        self.error_at(
                            p.span(),
                            format!("invalid port {}: 1 to 65535", p.get_ref()),
                        );
                        None
                    }
                })
                .collect()
        });
        let methods = spec.methods.as_ref().map(|list| {
            list.iter()
                .filter_map(|m| {
                    let text = m.get_ref();
                    if text.is_empty() || !text.bytes().all(is_tchar) {
                        self.error_at(m.span(), format!("invalid method {text:?}"));
                        return None;
                    }
                    let upper = text.to_ascii_uppercase();
                    if upper != *text && KNOWN_METHODS.contains(&upper.as_str()) {
                        self.error_at(
                            m.span(),
                            format!("methods are case-sensitive: write {upper:?}, not {text:?}"),
                        );
                        return None;
                    }
                    Some(text.clone())
                })
                .collect()
        });
        let paths = spec.paths.as_ref().and_then(|list| {
            for p in list {
                if !p.get_ref().starts_with('/') {
                    self.error_at(
                        p.span(),
                        format!("path glob {:?} must start with '/'", p.get_ref()),
                    );
                }
            }
            self.globset(list, true, "path")
        });
        let query = spec
            .query
            .as_ref()
            .map(|map| self.value_matchers(map, "query parameter", false, |_| Ok(())));
        let headers = spec.headers.as_ref().map(|map| {
            self.value_matchers(map, "header", true, |name| {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map(|_| ())
                    .map_err(|_| format!("invalid header name {name:?}"))
            })
        });
        let claims = spec
            .claims
            .as_ref()
            .map(|map| self.value_matchers(map, "claim", false, |_| Ok(())));
        if self.errors.len() != before {
            return None;
        }
        let mode = spec.mode.unwrap_or(policy_mode);
        let reason = spec.reason.clone().unwrap_or_else(|| match spec.effect {
            Effect::Deny => format!("denied by rule {policy}/{id}"),
            Effect::Allow => format!("allowed by rule {policy}/{id}"),
        });
        Some(CompiledRule {
            meta: Arc::new(RuleMeta {
                policy: policy.to_string(),
                rule: id.clone(),
                qualified: format!("{policy}/{id}"),
                reason,
                effect: spec.effect,
                mode,
            }),
            schemes,
            hosts,
            ports,
            methods,
            paths,
            query,
            headers,
            claims,
            policy: policy_index,
        })
    }

    /// Compiles `name = glob | [globs]` tables. Header names and values compare
    /// case-insensitively.
    fn value_matchers(
        &mut self,
        map: &std::collections::BTreeMap<String, Spanned<OneOrMany>>,
        what: &str,
        case_insensitive: bool,
        check_name: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<ValueMatcher> {
        let mut out = Vec::with_capacity(map.len());
        for (name, globs) in map {
            if name.is_empty() {
                self.error_at(globs.span(), format!("empty {what} name"));
                continue;
            }
            if let Err(m) = check_name(name) {
                self.error_at(globs.span(), m);
                continue;
            }
            let list = globs.get_ref().as_slice();
            if list.is_empty() {
                self.error_at(
                    globs.span(),
                    format!("{what} {name:?} needs at least one glob"),
                );
                continue;
            }
            let mut builder = GlobSetBuilder::new();
            let mut ok = true;
            for glob in list {
                match GlobBuilder::new(glob)
                    .case_insensitive(case_insensitive)
                    .backslash_escape(true)
                    .build()
                {
                    Ok(g) => {
                        builder.add(g);
                    }
                    Err(e) => {
                        ok = false;
                        self.error_at(
                            globs.span(),
                            format!("invalid glob {glob:?} for {what} {name:?}: {e}"),
                        );
                    }
                }
            }
            match builder.build() {
                Ok(set) if ok => out.push(ValueMatcher {
                    name: if case_insensitive {
                        name.to_ascii_lowercase()
                    } else {
                        name.clone()
                    },
                    globs: set,
                }),
                Ok(_) => {}
                Err(e) => self.error_at(
                    globs.span(),
                    format!("invalid globs for {what} {name:?}: {e}"),
                ),
            }
        }
        out
    }

    /// Compiles globs; path globs keep `*` within a segment and let `/x/**` match `/x` too.
    fn globset(&mut self, globs: &[Spanned<String>], path: bool, what: &str) -> Option<GlobSet> {
        let mut builder = GlobSetBuilder::new();
        let mut ok = true;
        for g in globs {
            let text = g.get_ref();
            let mut add = |pattern: &str| match build_glob(pattern, path) {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(e) => {
                    ok = false;
                    self.error_at(g.span(), format!("invalid {what} glob {text:?}: {e}"));
                }
            };
            add(text);
            if path {
                if let Some(base) = text.strip_suffix("/**") {
                    add(if base.is_empty() { "/" } else { base });
                }
            }
        }
        if !ok {
            return None;
        }
        match builder.build() {
            Ok(set) => Some(set),
            Err(e) => {
                let span = globs.first().map_or(0..0, |g| g.span());
                self.error_at(span, format!("invalid {what} globs: {e}"));
                None
            }
        }
    }
}

fn build_glob(pattern: &str, literal_separator: bool) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(literal_separator)
        .backslash_escape(true)
        .build()
}

const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A host glob over DNS labels: `*` is exactly one label, `**` one or more labels, and `*`
/// inside a label (`api-*`) matches within that label. `**` alone matches every host.
/// Patterns are canonicalized like request hosts, so `Example.COM.` equals `example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    Exact(String),
    Labels(Vec<LabelPattern>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelPattern {
    Literal(String),
    One,
    OneOrMore,
    Glob(String),
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<HostPattern, String> {
        let lower = pattern.to_lowercase();
        let p = lower.strip_suffix('.').unwrap_or(&lower);
        if p == "**" {
            return Ok(HostPattern::Any);
        }
        if !p.contains('*') {
            return normalize_host(p)
                .map(HostPattern::Exact)
                .map_err(|e| format!("invalid host {pattern:?}: {e}"));
        }
        let mut labels = Vec::new();
        for label in p.split('.') {
            labels.push(match label {
                "*" => LabelPattern::One,
                "**" => LabelPattern::OneOrMore,
                l if l.contains("**") => {
                    return Err(format!(
                        "invalid host glob {pattern:?}: \"**\" must be a whole label, e.g. \"**.example.com\""
                    ))
                }
                l if l.contains('*') => LabelPattern::Glob(l.to_string()),
                l => LabelPattern::Literal(
                    normalize_host(l).map_err(|e| format!("invalid host glob {pattern:?}: {e}"))?,
                ),
            });
        }
        Ok(HostPattern::Labels(labels))
    }

    /// The literal part an index can key on: the whole host, or the labels after the last
    /// wildcard label. `None` when nothing literal ends the pattern (`**`, `api.*`).
    fn literal_suffix(&self) -> Option<HostKey<'_>> {
        match self {
            HostPattern::Any => None,
            HostPattern::Exact(h) => Some(HostKey::Exact(h)),
            HostPattern::Labels(labels) => {
                let literal: Vec<&str> = labels
                    .iter()
                    .rev()
                    .map_while(|l| match l {
                        LabelPattern::Literal(s) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect();
                if literal.is_empty() {
                    return None;
                }
                let suffix: Vec<&str> = literal.into_iter().rev().collect();
                Some(HostKey::Suffix(suffix.join(".")))
            }
        }
    }

    /// `host` must already be canonical (see `normalize::normalize_host`).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Labels(pattern) => {
                let mut stack = [""; 16];
                let count = host.split('.').count();
                if count <= stack.len() {
                    for (slot, label) in stack.iter_mut().zip(host.split('.')) {
                        *slot = label;
                    }
                    match_labels(pattern, &stack[..count])
                } else {
                    match_labels(pattern, &host.split('.').collect::<Vec<_>>())
                }
            }
        }
    }
}

enum HostKey<'a> {
    Exact(&'a str),
    Suffix(String),
}

fn match_labels(pattern: &[LabelPattern], labels: &[&str]) -> bool {
    match pattern.split_first() {
        None => labels.is_empty(),
        Some((LabelPattern::OneOrMore, rest)) => {
            (1..=labels.len()).any(|n| match_labels(rest, &labels[n..]))
        }
        Some((p, rest)) => match labels.split_first() {
            None => false,
            Some((label, more)) => {
                let ok = match p {
                    LabelPattern::Literal(l) => l == label,
                    LabelPattern::One => true,
                    LabelPattern::Glob(g) => glob_label(g.as_bytes(), label.as_bytes()),
                    LabelPattern::OneOrMore => false,
                };
                ok && match_labels(rest, more)
            }
        },
    }
}

/// `*` within one label matches any run of characters.
fn glob_label(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|n| glob_label(rest, &text[n..])),
        Some((c, rest)) => text.first() == Some(c) && glob_label(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let table: &[(&str, &str, bool)] = &[
            ("api.github.com", "api.github.com", true),
            ("API.GitHub.com.", "api.github.com", true),
            ("api.github.com", "xapi.github.com", false),
            ("*.github.com", "api.github.com", true),
            ("*.github.com", "github.com", false),
            ("*.github.com", "a.b.github.com", false),
            ("**.github.com", "a.b.github.com", true),
            ("**.github.com", "github.com", false),
            ("**.github.com", "evilgithub.com", false),
            ("**", "anything.at.all", true),
            ("api-*.example.com", "api-eu.example.com", true),
            ("api-*.example.com", "api.example.com", false),
            ("*", "localhost", true),
            ("*", "a.b", false),
        ];
        for (pattern, host, want) in table {
            let p = HostPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(host), *want, "{pattern} ~ {host}");
        }
        assert!(HostPattern::parse("a**.com").is_err());
        assert!(HostPattern::parse("bad host").is_err());
    }

    fn compile_one(text: &str) -> Result<PolicySet, Vec<PolicyError>> {
        PolicySet::compile(&[("p.toml".into(), text.into())], DefaultEffect::Deny)
    }

    #[test]
    fn errors_carry_file_and_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("[[rules]]\nid = \"a\"\neffect = \"maybe\"\nhosts=[\"x\"]\n", 3, "maybe"),
            ("[[rules]]\nid = \"a\"\neffect = \"allow\"\nhost = [\"x\"]\n", 4, "host"),
            ("[[rules]]\nid = \"a\"\neffect = \"allow\"\n", 1, "no match dimension"),
            (
                "[[rules]]\nid = \"a\"\neffect = \"allow\"\nmethods = [\"get\"]\n",
                4,
                "case-sensitive",
            ),
            (
                "[[rules]]\nid = \"a\"\neffect = \"allow\"\nhosts = [\"x\"]\n[[rules]]\nid = \"a\"\neffect = \"deny\"\nhosts = [\"y\"]\n",
                6,
                "duplicate rule id",
            ),
            ("[[rules]]\nid = \"a\"\neffect = \"allow\"\npaths = [\"/a/[\"]\n", 4, "invalid path glob"),
            ("[[rules]]\nid = \"a\"\neffect = \"allow\"\nports = [70000]\n", 4, "invalid port"),
            ("[[rules]]\nid = \"a\"\neffect = \"allow\"\nschemes = [\"ftp\"]\n", 4, "invalid scheme"),
            ("name = \"x\"\nmode = \"loud\"\n", 2, "loud"),
            ("rules = [\n", 2, ""),
        ];
        for (text, line, needle) in cases {
            let errs = compile_one(text).unwrap_err();
            assert_eq!(errs[0].line, *line, "{text}: {errs:?}");
            assert!(errs[0].message.contains(needle), "{text}: {errs:?}");
            assert!(errs[0].to_string().starts_with(&format!("p.toml:{line}: ")));
        }
    }

    #[test]
    fn duplicate_policy_names_are_refused() {
        let a = ("a.toml".to_string(), "name = \"same\"\n".to_string());
        let b = ("b.toml".to_string(), "name = \"same\"\n".to_string());
        let errs = PolicySet::compile(&[a, b], DefaultEffect::Deny).unwrap_err();
        assert!(errs[0]
            .to_string()
            .starts_with("b.toml:1: duplicate policy name"));
    }
}
