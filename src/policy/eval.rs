//! The decision: deny overrides allow, monitor rules only shadow, default when nothing matches.

use std::sync::Arc;

use super::compile::{CompiledRule, PolicySet, RuleMeta};
use super::model::{Effect, Mode};
use super::normalize::Scheme;
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

impl CompiledRule {
    fn matches(&self, req: &RequestFacts<'_>, path: &str) -> bool {
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
    }
}

/// What one pass over the rules found.
#[derive(Default)]
struct Matches<'a> {
    deny: Option<&'a Arc<RuleMeta>>,
    allow: Option<&'a Arc<RuleMeta>>,
    monitor_deny: Option<&'a Arc<RuleMeta>>,
    monitor_allow: Option<&'a Arc<RuleMeta>>,
}

impl PolicySet {
    /// Evaluates a request. A path with parameters is evaluated in both spellings; a deny in
    /// either wins and an allow must hold for both.
    pub fn evaluate(&self, req: &RequestFacts<'_>) -> Decision {
        let m = self.scan(req, req.path);
        let m = match req.path_without_params {
            None => m,
            Some(stripped) => {
                let s = self.scan(req, stripped);
                Matches {
                    deny: m.deny.or(s.deny),
                    allow: m.allow.and(s.allow),
                    monitor_deny: m.monitor_deny.or(s.monitor_deny),
                    monitor_allow: m.monitor_allow.and(s.monitor_allow),
                }
            }
        };
        let (verdict, cause) = if let Some(rule) = m.deny {
            (Verdict::Deny, Cause::Rule(rule.clone()))
        } else if let Some(rule) = m.allow {
            (Verdict::Allow, Cause::Rule(rule.clone()))
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
        .map(|r| Shadow(r.clone()));
        Decision {
            verdict,
            cause,
            shadow,
        }
    }

    fn scan<'a>(&'a self, req: &RequestFacts<'_>, path: &str) -> Matches<'a> {
        let mut found = Matches::default();
        for policy in &self.policies {
            if policy
                .agents
                .as_ref()
                .is_some_and(|a| !a.is_match(req.agent))
            {
                continue;
            }
            for rule in &policy.rules {
                let slot = match (rule.meta.mode, rule.meta.effect) {
                    (Mode::Enforce, Effect::Deny) => &mut found.deny,
                    (Mode::Enforce, Effect::Allow) => &mut found.allow,
                    (Mode::Monitor, Effect::Deny) => &mut found.monitor_deny,
                    (Mode::Monitor, Effect::Allow) => &mut found.monitor_allow,
                };
                if slot.is_none() && rule.matches(req, path) {
                    *slot = Some(&rule.meta);
                    if rule.meta.mode == Mode::Enforce && rule.meta.effect == Effect::Deny {
                        // Deny overrides everything; monitor rules seen so far suffice.
                        return found;
                    }
                }
            }
        }
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
        RequestFacts {
            agent,
            method,
            scheme: Scheme::Https,
            host,
            port: 443,
            path,
            path_without_params: None,
        }
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
    }
}
