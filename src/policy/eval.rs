//! The decision: deny overrides allow, monitor rules only shadow, default when nothing matches.

use std::sync::Arc;

use super::compile::{CompiledRule, PolicySet, RuleMeta, ValueMatcher};
use super::model::{Effect, Mode};
use super::normalize::{percent_decode, Scheme};
use crate::config::DefaultEffect;

/// What is known about a request when it is evaluated. Every field is canonical.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub agent: &'a str,
    pub method: &'a str,
    pub scheme: Scheme,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    /// The path with `;params` stripped, when it has any: both spellings must be allowed.
    pub path_without_params: Option<&'a str>,
    /// The raw (validated) query, without '?'.
    pub query: Option<&'a str>,
    pub headers: Option<&'a http::HeaderMap>,
    /// The agent's verified token claims; none until identity provides them.
    pub claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl<'a> RequestFacts<'a> {
    /// Facts with only the target and agent; no query, headers or claims.
    pub fn new(
        agent: &'a str,
        method: &'a str,
        scheme: Scheme,
        host: &'a str,
        port: u16,
        path: &'a str,
    ) -> Self {
        RequestFacts {
            agent,
            method,
            scheme,
            host,
            port,
            path,
            path_without_params: None,
            query: None,
            headers: None,
            claims: None,
        }
    }
}

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// Why the verdict was reached.
#[derive(Debug, Clone)]
pub enum Cause {
    /// An enforce rule matched.
    Rule(Arc<RuleMeta>),
    /// No enforce rule matched; `[policies] default_effect` applied.
    Default,
}

/// A monitor rule that matched and would have changed the outcome.
#[derive(Debug, Clone)]
pub struct Shadow(pub Arc<RuleMeta>);

impl Shadow {
    /// `policy/rule:effect`, as recorded in the audit record.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.0.qualified, self.0.effect.as_str())
    }
}

/// The outcome of evaluation, carrying the rule and reason it rests on.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    pub cause: Cause,
    pub shadow: Option<Shadow>,
}

impl Decision {
    pub fn rule(&self) -> Option<&RuleMeta> {
        match &self.cause {
            Cause::Rule(meta) => Some(meta),
            Cause::Default => None,
        }
    }

    pub fn reason(&self) -> &str {
        match (&self.cause, self.verdict) {
            (Cause::Rule(meta), _) => &meta.reason,
            (Cause::Default, Verdict::Deny) => "no policy allows this request (default deny)",
            (Cause::Default, Verdict::Allow) => "no policy matched (default allow)",
        }
    }
}

/// The query, decoded once per evaluation. A value holding '+' is kept in both readings
/// ('+' as space, as forms mean it, and as '+'), since upstreams differ.
struct QueryParams {
    pairs: Vec<(String, Vec<String>)>,
}

impl QueryParams {
    fn parse(query: &str) -> QueryParams {
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let mut readings = vec![percent_decode(value, true)];
                if value.contains('+') {
                    readings.push(percent_decode(value, false));
                }
                (percent_decode(name, true), readings)
            })
            .collect();
        QueryParams { pairs }
    }

    fn values<'q>(&'q self, name: &'q str) -> impl Iterator<Item = &'q str> + 'q {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, readings)| readings.iter().map(String::as_str))
    }
}

/// A deny rule matches when any value matches (so a repeated parameter cannot hide a bad
/// value); an allow rule only when there is a value and every value matches.
fn values_match<'v>(
    globs: &globset::GlobSet,
    values: impl Iterator<Item = &'v str>,
    effect: Effect,
) -> bool {
    let mut any = false;
    for v in values {
        let hit = globs.is_match(v);
        match effect {
            Effect::Deny if hit => return true,
            Effect::Allow if !hit => return false,
            _ => {}
        }
        any = true;
    }
    effect == Effect::Allow && any
}

fn claim_text(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(claim_text).collect(),
        other => vec![other.to_string()],
    }
}

struct Eval<'r> {
    req: &'r RequestFacts<'r>,
    params: Option<QueryParams>,
}

impl CompiledRule {
    fn matches(&self, ev: &Eval<'_>, path: &str) -> bool {
        let req = ev.req;
        let effect = self.meta.effect;
        self.schemes
            .as_ref()
            .is_none_or(|s| s.contains(&req.scheme))
            && self.ports.as_ref().is_none_or(|p| p.contains(&req.port))
            && self
                .methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|m| m == req.method))
            && self
                .hosts
                .as_ref()
                .is_none_or(|h| h.iter().any(|h| h.matches(req.host)))
            && self.paths.as_ref().is_none_or(|p| p.is_match(path))
            && self.query.as_ref().is_none_or(|q| {
                q.iter().all(|m: &ValueMatcher| match &ev.params {
                    Some(params) => values_match(&m.globs, params.values(&m.name), effect),
                    None => false,
                })
            })
            && self.headers.as_ref().is_none_or(|hs| {
                hs.iter().all(|m| {
                    let values = req
                        .headers
                        .into_iter()
                        .flat_map(|h| h.get_all(m.name.as_str()).iter())
                        .map(|v| v.to_str().unwrap_or("\u{FFFD}"));
                    values_match(&m.globs, values, effect)
                })
            })
            && self.claims.as_ref().is_none_or(|cs| {
                cs.iter().all(|m| {
                    // Claims come signed, so an array claim (groups, roles) matches when any
                    // element does, for allow and deny alike.
                    req.claims
                        .and_then(|c| c.get(&m.name))
                        .map(claim_text)
                        .is_some_and(|texts| texts.iter().any(|t| m.globs.is_match(t)))
                })
            })
    }
}

/// What one pass over the candidate rules found: the lowest-indexed match of each kind.
#[derive(Default, Clone, Copy)]
struct Matches {
    deny: Option<u32>,
    allow: Option<u32>,
    monitor_deny: Option<u32>,
    monitor_allow: Option<u32>,
}

impl PolicySet {
    /// Evaluates a request. A path with parameters is evaluated in both spellings; a deny in
    /// either wins and an allow must hold for both.
    pub fn evaluate(&self, req: &RequestFacts<'_>) -> Decision {
        let ev = Eval {
            req,
            params: if self.uses_query {
                req.query.map(QueryParams::parse)
            } else {
                None
            },
        };
        let m = self.scan(&ev, req.path);
        let m = match req.path_without_params {
            None => m,
            Some(stripped) => {
                let s = self.scan(&ev, stripped);
                Matches {
                    deny: m.deny.or(s.deny),
                    allow: m.allow.and(s.allow),
                    monitor_deny: m.monitor_deny.or(s.monitor_deny),
                    monitor_allow: m.monitor_allow.and(s.monitor_allow),
                }
            }
        };
        let meta = |i: u32| self.rules[i as usize].meta.clone();
        let (verdict, cause) = if let Some(rule) = m.deny {
            (Verdict::Deny, Cause::Rule(meta(rule)))
        } else if let Some(rule) = m.allow {
            (Verdict::Allow, Cause::Rule(meta(rule)))
        } else {
            match self.default_effect {
                DefaultEffect::Allow => (Verdict::Allow, Cause::Default),
                DefaultEffect::Deny => (Verdict::Deny, Cause::Default),
            }
        };
        let shadow = match verdict {
            Verdict::Allow => m.monitor_deny,
            // A monitor allow changes nothing when an enforce deny matched.
            Verdict::Deny if m.deny.is_none() => {
                m.monitor_allow.filter(|_| m.monitor_deny.is_none())
            }
            Verdict::Deny => None,
        }
        .map(|i| Shadow(meta(i)));
        Decision {
            verdict,
            cause,
            shadow,
        }
    }

    fn scan(&self, ev: &Eval<'_>, path: &str) -> Matches {
        let mut found = Matches::default();
        self.index.candidates(ev.req.host, |list| {
            for &i in list {
                let rule = &self.rules[i as usize];
                let slot = match (rule.meta.mode, rule.meta.effect) {
                    (Mode::Enforce, Effect::Deny) => &mut found.deny,
                    (Mode::Enforce, Effect::Allow) => &mut found.allow,
                    (Mode::Monitor, Effect::Deny) => &mut found.monitor_deny,
                    (Mode::Monitor, Effect::Allow) => &mut found.monitor_allow,
                };
                if slot.is_some_and(|best| best < i) {
                    continue;
                }
                let agent_ok = self.policies[rule.policy]
                    .agents
                    .as_ref()
                    .is_none_or(|a| a.is_match(ev.req.agent));
                if agent_ok && rule.matches(ev, path) {
                    *slot = Some(i);
                }
            }
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(texts: &[&str]) -> PolicySet {
        let sources: Vec<(String, String)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("p{i}.toml"), t.to_string()))
            .collect();
        PolicySet::compile(&sources, DefaultEffect::Deny).unwrap()
    }

    fn facts<'a>(
        agent: &'a str,
        method: &'a str,
        host: &'a str,
        path: &'a str,
    ) -> RequestFacts<'a> {
        RequestFacts::new(agent, method, Scheme::Https, host, 443, path)
    }

    const GITHUB: &str = r#"
name = "github"
agents = ["research-*"]
[[rules]]
id = "read"
effect = "allow"
hosts = ["api.github.com"]
methods = ["GET"]
paths = ["/repos/**"]
[[rules]]
id = "no-admin"
effect = "deny"
reason = "admin endpoints are off limits"
hosts = ["api.github.com"]
paths = ["/repos/*/*/admin/**"]
"#;

    #[test]
    fn deny_overrides_allow_and_default_denies() {
        let s = set(&[GITHUB]);
        let d = s.evaluate(&facts("research-1", "GET", "api.github.com", "/repos/a/b"));
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.rule().unwrap().qualified, "github/read");
        let d = s.evaluate(&facts("research-1", "GET", "api.github.com", "/repos"));
        assert_eq!(d.verdict, Verdict::Allow, "/x/** matches /x");
        let d = s.evaluate(&facts(
            "research-1",
            "GET",
            "api.github.com",
            "/repos/a/b/admin/x",
        ));
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.reason(), "admin endpoints are off limits");
        let d = s.evaluate(&facts("research-1", "get", "api.github.com", "/repos/a/b"));
        assert_eq!(d.verdict, Verdict::Deny, "methods are case-sensitive");
        let d = s.evaluate(&facts("ops", "GET", "api.github.com", "/repos/a/b"));
        assert!(matches!(d.cause, Cause::Default));
        let d = s.evaluate(&facts("research-1", "GET", "api.github.com", "/Repos/a"));
        assert_eq!(d.verdict, Verdict::Deny, "paths are case-sensitive");
    }

    #[test]
    fn path_params_cannot_escape_a_deny() {
        let s = set(&[GITHUB]);
        let mut f = facts(
            "research-1",
            "GET",
            "api.github.com",
            "/repos/a/b/admin;x/y",
        );
        f.path_without_params = Some("/repos/a/b/admin/y");
        assert_eq!(s.evaluate(&f).verdict, Verdict::Deny);
    }

    #[test]
    fn monitor_rules_only_shadow() {
        let monitor = r#"
name = "watch"
mode = "monitor"
[[rules]]
id = "no-delete"
effect = "deny"
methods = ["DELETE"]
"#;
        let allow_all =
            "name = \"all\"\n[[rules]]\nid = \"any\"\neffect = \"allow\"\nhosts = [\"**\"]\n";
        let s = set(&[monitor, allow_all]);
        let d = s.evaluate(&facts("a", "DELETE", "x.com", "/"));
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.shadow.unwrap().describe(), "watch/no-delete:deny");
        let d = s.evaluate(&facts("a", "GET", "x.com", "/"));
        assert!(d.shadow.is_none());
        // A monitor allow on a default-denied request is recorded too.
        let trial = "name = \"trial\"\nmode = \"monitor\"\n[[rules]]\nid = \"t\"\neffect = \"allow\"\nhosts = [\"y.com\"]\n";
        let s = set(&[trial]);
        let d = s.evaluate(&facts("a", "GET", "y.com", "/"));
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.shadow.unwrap().describe(), "trial/t:allow");
    }

    #[test]
    fn the_first_matching_rule_is_named_whatever_the_index_order() {
        let s = set(&[
            "name = \"a\"\n[[rules]]\nid = \"wide\"\neffect = \"allow\"\nhosts = [\"**\"]\n",
            "name = \"b\"\n[[rules]]\nid = \"exact\"\neffect = \"allow\"\nhosts = [\"x.com\"]\n",
        ]);
        let d = s.evaluate(&facts("a", "GET", "x.com", "/"));
        assert_eq!(d.rule().unwrap().qualified, "a/wide");
    }

    #[test]
    fn query_headers_and_claims() {
        let s = set(&[r#"
name = "q"
[[rules]]
id = "paged"
effect = "allow"
hosts = ["api.x.com"]
query = { per_page = ["1?", "[1-9]"] }
[[rules]]
id = "no-debug"
effect = "deny"
query = { debug = "*" }
[[rules]]
id = "json-only"
effect = "allow"
hosts = ["json.x.com"]
headers = { "Content-Type" = "application/json*" }
[[rules]]
id = "team"
effect = "allow"
hosts = ["claims.x.com"]
claims = { team = "research", level = "[3-5]" }
"#]);
        let eval = |host: &str, query: Option<&str>, headers: Option<&http::HeaderMap>, claims| {
            let mut f = facts("a", "GET", host, "/");
            f.query = query;
            f.headers = headers;
            f.claims = claims;
            s.evaluate(&f).verdict
        };
        assert_eq!(
            eval("api.x.com", Some("per_page=10"), None, None),
            Verdict::Allow
        );
        assert_eq!(
            eval("api.x.com", Some("per%5Fpage=5"), None, None),
            Verdict::Allow,
            "names decode"
        );
        assert_eq!(
            eval("api.x.com", Some("per_page=100"), None, None),
            Verdict::Deny
        );
        assert_eq!(
            eval("api.x.com", None, None, None),
            Verdict::Deny,
            "absent parameter"
        );
        assert_eq!(
            eval("api.x.com", Some("per_page=10&per_page=100"), None, None),
            Verdict::Deny,
            "an allow needs every value to match"
        );
        assert_eq!(
            eval("api.x.com", Some("per_page=10&debug=1"), None, None),
            Verdict::Deny
        );
        assert_eq!(
            eval("api.x.com", Some("per_page=10&%64ebug"), None, None),
            Verdict::Deny,
            "encoded name"
        );

        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(
            eval("json.x.com", None, Some(&h), None),
            Verdict::Allow,
            "case-insensitive"
        );
        h.insert("content-type", "text/plain".parse().unwrap());
        assert_eq!(eval("json.x.com", None, Some(&h), None), Verdict::Deny);

        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"team":["ops","research"],"level":4}"#).unwrap();
        assert_eq!(
            eval("claims.x.com", None, None, Some(&claims)),
            Verdict::Allow
        );
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"team":"research","level":7}"#).unwrap();
        assert_eq!(
            eval("claims.x.com", None, None, Some(&claims)),
            Verdict::Deny
        );
        assert_eq!(
            eval("claims.x.com", None, None, None),
            Verdict::Deny,
            "no claims yet"
        );
    }

    #[test]
    fn plus_in_a_value_is_read_both_ways() {
        let s = set(&[
            "name = \"a\"\n[[rules]]\nid = \"all\"\neffect = \"allow\"\nhosts = [\"**\"]\n",
            "name = \"d\"\n[[rules]]\nid = \"no-drop\"\neffect = \"deny\"\nquery = { q = \"drop table\" }\n",
        ]);
        for q in ["q=drop+table", "q=drop%20table"] {
            let mut f = facts("a", "GET", "x.com", "/");
            f.query = Some(q);
            assert_eq!(s.evaluate(&f).verdict, Verdict::Deny, "{q}");
        }
    }

    #[test]
    fn index_finds_wildcards_exact_and_hostless_rules() {
        let s = set(&[r#"
name = "i"
[[rules]]
id = "sub"
effect = "allow"
hosts = ["*.svc.example.com"]
[[rules]]
id = "deep"
effect = "allow"
hosts = ["**.deep.example.com"]
[[rules]]
id = "mid"
effect = "allow"
hosts = ["api.*"]
[[rules]]
id = "ip"
effect = "allow"
hosts = ["10.0.0.1"]
[[rules]]
id = "hostless-deny"
effect = "deny"
methods = ["DELETE"]
"#]);
        let rule = |host: &str, method: &str| {
            s.evaluate(&facts("a", method, host, "/"))
                .rule()
                .map(|r| r.rule.clone())
        };
        assert_eq!(rule("a.svc.example.com", "GET").as_deref(), Some("sub"));
        assert_eq!(rule("a.b.svc.example.com", "GET"), None);
        assert_eq!(rule("x.y.deep.example.com", "GET").as_deref(), Some("deep"));
        assert_eq!(rule("api.anything", "GET").as_deref(), Some("mid"));
        assert_eq!(rule("10.0.0.1", "GET").as_deref(), Some("ip"));
        assert_eq!(rule("10.0.0.1", "DELETE").as_deref(), Some("hostless-deny"));
    }
}
