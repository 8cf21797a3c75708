//! Offline tooling on the proxy's own admission code: `explain` one request, and `test`
//! policies against expected decisions (`policies/tests/*.toml`).

use std::path::{Path, PathBuf};

use pingora::http::RequestHeader;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::{line_col, Config};
use crate::identity::{AgentId, Identified, Identity};
use crate::policy::PolicySet;
use crate::proxy::admission::{self, Admission};
use crate::proxy::routes::RouteTable;

/// A request described on the command line or in a test case.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub agent: String,
    pub method: String,
    /// Absolute URL (forward proxy) or a path (reverse route).
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Claims the agent's token would carry (JWT mode).
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The decision as `explain` prints it.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub decision: &'static str,
    /// What the proxy would answer: 200 (forwarded, subject to the egress check and the
    /// upstream), 400, 403 or 404.
    pub status: u16,
    pub policy: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
    pub shadow: Option<String>,
    pub agent: Option<String>,
    pub mode: &'static str,
    /// The normalized target, as it would be sent upstream.
    pub target: Option<String>,
    pub policy_version: String,
}

fn build_request(spec: &RequestSpec) -> Result<RequestHeader, String> {
    let mut req = RequestHeader::build(spec.method.as_bytes(), b"/", None)
        .map_err(|e| format!("invalid method {:?}: {e}", spec.method))?;
    req.set_raw_path(spec.url.as_bytes())
        .map_err(|e| format!("invalid URL {:?}: {e}", spec.url))?;
    for (name, value) in &spec.headers {
        req.append_header(name.clone(), value.as_str())
            .map_err(|e| format!("invalid header {name}: {e}"))?;
    }
    Ok(req)
}

/// Decides one request exactly as the proxy's admission does (the egress check, which needs
/// DNS, is not run).
pub fn explain(
    policies: &PolicySet,
    routes: &RouteTable,
    spec: &RequestSpec,
) -> Result<Explanation, String> {
    let req = build_request(spec)?;
    let agent = AgentId::parse(&spec.agent).ok_or_else(|| {
        format!(
            "invalid agent id {:?}: 1-128 letters, digits and . _ - : @ /",
            spec.agent
        )
    })?;
    let who = Identity::Preset(Identified {
        agent,
        claims: spec.claims.clone().map(std::sync::Arc::new),
        token_source: None,
    });
    let mut out = Admission::default();
    let result = admission::admit(&who, policies, routes, &req, None, &mut out);
    let rule = out.rule();
    let (decision, status, reason) = match &result {
        Ok(()) => (
            "allow",
            200,
            out.decision
                .as_ref()
                .map(|d| d.reason().to_string())
                .unwrap_or_default(),
        ),
        Err(refusal) => ("deny", refusal.status(), refusal.reason().to_string()),
    };
    Ok(Explanation {
        decision,
        status,
        policy: rule.map(|r| r.policy.clone()),
        rule: rule.map(|r| r.rule.clone()),
        reason,
        shadow: out.shadow(),
        agent: out.agent.as_ref().map(|a| a.to_string()),
        mode: out.mode.as_str(),
        target: out.target.as_ref().map(|t| t.to_string()),
        policy_version: policies.version.clone(),
    })
}

/// Parses `name=value` claims; a value that is valid JSON (`4`, `true`, `["a","b"]`) is
/// taken as such, anything else as a string.
pub fn parse_claims(
    pairs: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut claims = serde_json::Map::new();
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| format!("--claim {pair:?}: write name=value"))?;
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        claims.insert(name.to_string(), value);
    }
    Ok(claims)
}

/// Loads the configuration's routes and policies, or says why not.
pub fn load(config: &Config) -> Result<(PolicySet, RouteTable), String> {
    let routes = RouteTable::new(&config.routes)?;
    let policies = PolicySet::load_dir(&config.policies.dir, config.policies.default_effect)
        .map_err(|errors| {
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })?;
    Ok((policies, routes))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<Spanned<Case>>,
}

/// One policy test case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    #[serde(default = "anonymous")]
    agent: String,
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// The claims of the agent's token (JWT mode).
    claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// Accepted for forward compatibility; bodies are not inspected yet.
    #[serde(default)]
    #[allow(dead_code)]
    body: Option<String>,
    expect: Expect,
    /// `policy/rule` that must decide, or "default" for the default effect.
    rule: Option<String>,
}

fn anonymous() -> String {
    "anonymous".into()
}

fn get() -> String {
    "GET".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

/// The outcome of a test run.
#[derive(Debug, Default)]
pub struct TestReport {
    pub passed: usize,
    pub failed: usize,
    /// One line per case (`ok` / `FAIL`) and per unreadable file.
    pub lines: Vec<String>,
}

/// Runs every `*.toml` case file in `dir` against the policies.
pub fn run_tests(policies: &PolicySet, routes: &RouteTable, dir: &Path) -> TestReport {
    let mut report = TestReport::default();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            report.failed += 1;
            report.lines.push(format!(
                "{}: cannot read test directory: {e}",
                dir.display()
            ));
            return report;
        }
    };
    files.sort();
    for file in files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                report.failed += 1;
                report.lines.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        let cases: CaseFile = match toml::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                let line = e.span().map_or(1, |s| line_col(&text, s.start).0);
                report.failed += 1;
                report
                    .lines
                    .push(format!("{name}:{line}: {}", e.message().trim()));
                continue;
            }
        };
        for spanned in &cases.case {
            let line = line_col(&text, spanned.span().start).0;
            let case = spanned.get_ref();
            let label = format!(
                "{name}:{line} {}",
                case.name.as_deref().unwrap_or(&case.url)
            );
            match check_case(policies, routes, case) {
                Ok(()) => {
                    report.passed += 1;
                    report.lines.push(format!("ok    {label}"));
                }
                Err(why) => {
                    report.failed += 1;
                    report.lines.push(format!("FAIL  {label}: {why}"));
                }
            }
        }
    }
    report
}

fn check_case(policies: &PolicySet, routes: &RouteTable, case: &Case) -> Result<(), String> {
    let spec = RequestSpec {
        agent: case.agent.clone(),
        method: case.method.clone(),
        url: case.url.clone(),
        headers: case
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        claims: case.claims.clone(),
    };
    let got = explain(policies, routes, &spec)?;
    let expected = match case.expect {
        Expect::Allow => "allow",
        Expect::Deny => "deny",
    };
    let decided_by = match (&got.policy, &got.rule) {
        (Some(p), Some(r)) => format!("{p}/{r}"),
        _ => "default".to_string(),
    };
    if got.decision != expected {
        return Err(format!(
            "expected {expected}, got {} ({}; {})",
            got.decision, decided_by, got.reason
        ));
    }
    if let Some(rule) = &case.rule {
        if *rule != decided_by {
            return Err(format!("expected rule {rule}, decided by {decided_by}"));
        }
    }
    Ok(())
}
