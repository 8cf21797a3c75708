//! Reverse-proxy routes: `http://proxy/<prefix>/rest` → `<upstream>/rest`, with injected
//! headers. Matching happens on the normalized path, so `..` can never climb out of a route.

use http::header::{HeaderName, HeaderValue};

use crate::config::RouteConfig;
use crate::policy::normalize::{parse_authority, Scheme};

/// A compiled route.
#[derive(Clone)]
pub struct Route {
    /// Always starts and ends with '/'.
    pub prefix: String,
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path the upstream URL carries (no trailing '/'), prepended to the rest.
    pub base_path: String,
    /// Injected upstream, replacing whatever the agent sent under the same names.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The injected values to scrub from responses (empty when `scrub_response = false`).
    pub secrets: super::scrub::Secrets,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("prefix", &self.prefix)
            .field(
                "upstream",
                &format!(
                    "{}://{}:{}{}",
                    self.scheme.as_str(),
                    self.host,
                    self.port,
                    self.base_path
                ),
            )
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Route {
    pub fn from_config(c: &RouteConfig) -> Result<Route, String> {
        if !c.prefix.starts_with('/') || c.prefix.len() < 2 {
            return Err(format!(
                "prefix {:?} must start with '/' and name a path, e.g. \"/github/\"",
                c.prefix
            ));
        }
        let prefix = if c.prefix.ends_with('/') {
            c.prefix.clone()
        } else {
            format!("{}/", c.prefix)
        };
        let (scheme, rest) = c
            .upstream
            .split_once("://")
            .and_then(|(s, r)| Some((Scheme::parse(s)?, r)))
            .ok_or_else(|| {
                format!(
                    "upstream {:?} must be an http:// or https:// URL, e.g. \"https://api.github.com\"",
                    c.upstream
                )
            })?;
        let (authority, base_path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if base_path.contains(['?', '#']) {
            return Err(format!(
                "upstream {:?} must not carry a query or fragment",
                c.upstream
            ));
        }
        let (host, port) = parse_authority(authority.as_bytes(), scheme)
            .map_err(|e| format!("upstream {:?}: {e}", c.upstream))?;
        let headers = c
            .headers
            .iter()
            .map(|(name, value)| {
                let n = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid header name {name:?}"))?;
                let mut v = HeaderValue::from_str(value).map_err(|_| {
                    format!("header {name}: value has characters not allowed in a header")
                })?;
                v.set_sensitive(true);
                Ok((n, v))
            })
            .collect::<Result<Vec<(HeaderName, HeaderValue)>, String>>()?;
        let secrets = if c.scrub_response {
            super::scrub::Secrets::from_values(headers.iter().map(|(_, v)| v.as_bytes()))
        } else {
            super::scrub::Secrets::default()
        };
        Ok(Route {
            prefix,
            scheme,
            host,
            port,
            base_path: base_path.to_string(),
            headers,
            secrets,
        })
    }
}

/// Routes ordered longest prefix first; shared, so a request holds its route by reference.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<std::sync::Arc<Route>>,
}

impl RouteTable {
    pub fn new(configs: &[RouteConfig]) -> Result<RouteTable, String> {
        let mut routes = configs
            .iter()
            .map(|c| Route::from_config(c).map(std::sync::Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(RouteTable { routes })
    }

    /// The route for a normalized path, and the upstream path (base path + rest).
    /// `/github` (the prefix without its slash) maps to the upstream root.
    pub fn resolve(&self, path: &str) -> Option<(&std::sync::Arc<Route>, String)> {
        self.routes.iter().find_map(|r| {
            let rest = if let Some(rest) = path.strip_prefix(r.prefix.as_str()) {
                rest
            } else if path == &r.prefix[..r.prefix.len() - 1] {
                ""
            } else {
                return None;
            };
            Some((r, format!("{}/{}", r.base_path, rest)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, upstream: &str) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            upstream: upstream.into(),
            headers: Default::default(),
            scrub_response: true,
        }
    }

    #[test]
    fn longest_prefix_wins_and_rest_is_appended() {
        let t = RouteTable::new(&[
            route("/gh/", "https://api.github.com"),
            route("/gh/raw/", "https://raw.example.com/base/"),
        ])
        .unwrap();
        let (r, p) = t.resolve("/gh/repos/x").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, p.as_str()),
            ("api.github.com", 443, "/repos/x")
        );
        let (r, p) = t.resolve("/gh/raw/f").unwrap();
        assert_eq!(
            (r.host.as_str(), p.as_str()),
            ("raw.example.com", "/base/f")
        );
        assert_eq!(t.resolve("/gh").unwrap().1, "/");
        assert!(t.resolve("/ghx/a").is_none());
        assert!(t.resolve("/").is_none());
    }

    #[test]
    fn bad_routes_are_refused() {
        assert!(Route::from_config(&route("github", "https://a.com")).is_err());
        assert!(Route::from_config(&route("/g/", "ftp://a.com")).is_err());
        assert!(Route::from_config(&route("/g/", "https://a.com/x?y")).is_err());
    }
}
