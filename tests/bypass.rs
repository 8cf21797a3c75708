//! Spellings of denied requests. Each case is sent raw through the forward proxy; the table
//! gives the status and, where the request is allowed, the exact target the upstream must
//! receive. Afterwards the upstream must have seen exactly the allowed requests.

mod common;

use common::*;

const POLICY: &str = r#"
name = "bypass"
[[rules]]
id = "site"
effect = "allow"
hosts = ["127.0.0.1"]
methods = ["GET", "POST"]

[[rules]]
id = "no-admin"
effect = "deny"
reason = "admin is off limits"
paths = ["/admin/**"]

[[rules]]
id = "no-localhost-name"
effect = "deny"
hosts = ["localhost"]

[[rules]]
id = "no-debug-param"
effect = "deny"
query = { debug = "*" }

[[rules]]
id = "no-delete"
effect = "deny"
methods = ["DELETE"]

[[rules]]
id = "no-debug-header"
effect = "deny"
headers = { "x-debug" = "*" }
"#;

struct Case {
    /// Request line target; `{a}` stands for `127.0.0.1:<port>`, `{p}` for the port.
    method: &'static str,
    target: &'static str,
    /// The Host header; defaults to the target's authority.
    host: Option<&'static str>,
    extra: &'static str,
    status: u16,
    /// The origin-form target the upstream must see (allowed cases).
    upstream: Option<&'static str>,
}

const fn case(
    method: &'static str,
    target: &'static str,
    status: u16,
    upstream: Option<&'static str>,
) -> Case {
    Case {
        method,
        target,
        host: None,
        extra: "",
        status,
        upstream,
    }
}

const fn with_headers(target: &'static str, extra: &'static str, status: u16) -> Case {
    Case {
        method: "GET",
        target,
        host: None,
        extra,
        status,
        upstream: None,
    }
}

fn table() -> Vec<Case> {
    vec![
        // Baseline.
        case("GET", "http://{a}/ok", 200, Some("/ok")),
        case("GET", "http://{a}/admin", 403, None),
        case("GET", "http://{a}/admin/", 403, None),
        case("GET", "http://{a}/admin/users", 403, None),
        // Paths are case-sensitive (documented): a different path, forwarded as such.
        case("GET", "http://{a}/ADMIN/users", 200, Some("/ADMIN/users")),
        // Slashes and dot-segments.
        case("GET", "http://{a}//admin/users", 403, None),
        case("GET", "http://{a}/./admin/users", 403, None),
        case("GET", "http://{a}/x/../admin/users", 403, None),
        case("GET", "http://{a}/a/b/../../admin", 403, None),
        // Empty segments count for "..", as in RFC 3986: this is /x/admin, and so forwarded.
        case("GET", "http://{a}/x//../admin", 200, Some("/x/admin")),
        case("GET", "http://{a}/admin/..", 200, Some("/")),
        case("GET", "http://{a}/../admin", 400, None),
        case("GET", "http://{a}/x/../../admin", 400, None),
        // Percent-encoding.
        case("GET", "http://{a}/%61dmin/users", 403, None),
        case("GET", "http://{a}/%61%64%6d%69%6e", 403, None),
        case("GET", "http://{a}/x/%2e%2e/admin/users", 403, None),
        case("GET", "http://{a}/x/.%2e/admin", 403, None),
        case("GET", "http://{a}/x/%2E%2E/admin", 403, None),
        case("GET", "http://{a}/%2e%2e/admin", 400, None),
        case("GET", "http://{a}/admin%2fusers", 400, None),
        case("GET", "http://{a}/admin%2Fusers", 400, None),
        case("GET", "http://{a}/x%2f..%2fadmin", 400, None),
        case("GET", "http://{a}/admin%252fusers", 400, None),
        case("GET", "http://{a}/%252e%252e/admin", 400, None),
        case("GET", "http://{a}/admin%00", 400, None),
        case("GET", "http://{a}/adm%zzin", 400, None),
        case("GET", "http://{a}/admin%", 400, None),
        case("GET", "http://{a}/%7Euser/%41", 200, Some("/~user/A")),
        case("GET", "http://{a}/a%3Bb", 200, Some("/a%3Bb")),
        // Backslashes.
        case("GET", "http://{a}/admin\\users", 400, None),
        case("GET", "http://{a}/x/%5c../admin", 400, None),
        case("GET", "http://{a}/x\\..\\admin", 400, None),
        // Path parameters.
        case("GET", "http://{a}/admin;x=1/users", 403, None),
        case("GET", "http://{a}/admin;/users", 403, None),
        case("GET", "http://{a}/x/..;/admin", 400, None),
        case("GET", "http://{a}/x;/../admin", 403, None),
        // Fragments.
        case("GET", "http://{a}/admin#x", 400, None),
        case("GET", "http://{a}/ok#/admin", 400, None),
        // Query.
        case("GET", "http://{a}/q?debug=1", 403, None),
        case("GET", "http://{a}/q?%64ebug=1", 403, None),
        case("GET", "http://{a}/q?a=1&debug", 403, None),
        case("GET", "http://{a}/q?a=1&debug=", 403, None),
        case("GET", "http://{a}/q?DEBUG=1", 200, Some("/q?DEBUG=1")),
        case("GET", "http://{a}/q?a=%zz", 400, None),
        case("GET", "http://{a}/q?a=1&b=x+y", 200, Some("/q?a=1&b=x+y")),
        // Methods are case-sensitive: `delete` is not DELETE, and nothing allows it.
        case("DELETE", "http://{a}/ok", 403, None),
        case("delete", "http://{a}/ok", 403, None),
        case("PUT", "http://{a}/ok", 403, None),
        // Headers.
        with_headers("http://{a}/ok", "X-Debug: 1\r\n", 403),
        with_headers("http://{a}/ok", "x-DEBUG: on\r\n", 403),
        with_headers("http://{a}/ok", "X-Other: 1\r\nX-Debug: 1\r\n", 403),
        // Framing.
        Case {
            method: "POST",
            target: "http://{a}/ok",
            host: None,
            extra: "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            status: 400,
            upstream: None,
        },
        // Host spellings: the name is denied however it is written.
        case("GET", "http://localhost:{p}/ok", 403, None),
        case("GET", "http://LOCALHOST:{p}/ok", 403, None),
        case("GET", "http://localhost.:{p}/ok", 403, None),
        case("GET", "http://LocalHost.:{p}/ok", 403, None),
        // Spellings of 127.0.0.1 are that address (allowed host), forwarded canonically.
        case("GET", "http://2130706433:{p}/ok", 200, Some("/ok")),
        case("GET", "http://0x7f.1:{p}/ok", 200, Some("/ok")),
        case("GET", "http://0177.0.0.1:{p}/ok", 200, Some("/ok")),
        case("GET", "http://127.1:{p}/admin/x", 403, None),
        case("GET", "http://0x7F000001:{p}/admin", 403, None),
        // Not the same host string: IPv6-mapped spelling falls to the default deny.
        case("GET", "http://[::ffff:127.0.0.1]:{p}/ok", 403, None),
        // Authority tricks.
        case("GET", "http://user@{a}/ok", 400, None),
        case("GET", "http://{a}@localhost:{p}/ok", 400, None),
        Case {
            method: "GET",
            target: "http://{a}/ok",
            host: Some("localhost:{p}"),
            extra: "",
            status: 400,
            upstream: None,
        },
        case("GET", "http://127.0.0.1:0x50/ok", 400, None),
        case("GET", "http://127.0.0.1:{p}0000/ok", 400, None),
        // Denied bodies never leave.
        Case {
            method: "POST",
            target: "http://{a}/admin/upload",
            host: None,
            extra: "Content-Length: 11\r\n\r\nhello world",
            status: 403,
            upstream: None,
        },
    ]
}

#[tokio::test]
async fn no_spelling_of_a_denied_request_gets_through() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(&[("bypass.toml", POLICY)], "").await;
    let port = up.addr.port().to_string();
    let authority = format!("127.0.0.1:{port}");
    let table = table();
    assert!(table.len() >= 40);
    let fill = |s: &str| s.replace("{a}", &authority).replace("{p}", &port);
    let mut allowed = Vec::new();
    let mut failures = Vec::new();
    for case in &table {
        let target = fill(case.target);
        let host = case.host.map(fill).unwrap_or_else(|| {
            target
                .split("://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or("")
                .to_string()
        });
        let (extra, body) = match case.extra.split_once("\r\n\r\n") {
            Some((h, b)) => (format!("{h}\r\n"), b),
            None => (case.extra.to_string(), ""),
        };
        let request = format!(
            "{} {target} HTTP/1.1\r\nHost: {host}\r\nX-Agent-Id: tester\r\n{extra}Connection: close\r\n\r\n{body}",
            case.method
        );
        let before = up.seen().len();
        let reply = raw(aw.proxy, request.as_bytes()).await;
        let seen = up.seen();
        if reply.status != case.status {
            failures.push(format!(
                "{} {target}: want {}, got {} {}",
                case.method,
                case.status,
                reply.status,
                reply.text()
            ));
            continue;
        }
        match case.upstream {
            Some(want) => {
                allowed.push(target.clone());
                let got = seen.get(before).map(|s| s.target.clone());
                if got.as_deref() != Some(want) {
                    failures.push(format!("{target}: upstream got {got:?}, want {want:?}"));
                }
                let host_seen = seen
                    .get(before)
                    .and_then(|s| s.header("host").map(str::to_string));
                if host_seen.as_deref() != Some(authority.as_str()) {
                    failures.push(format!(
                        "{target}: upstream Host {host_seen:?}, want {authority}"
                    ));
                }
            }
            None if seen.len() != before => {
                failures.push(format!("{target}: reached the upstream"))
            }
            None => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    assert_eq!(
        up.seen().len(),
        allowed.len(),
        "the upstream saw more than the allowed requests"
    );
}

#[tokio::test]
async fn a_route_cannot_be_climbed_out_of_or_around() {
    let up = Upstream::start().await;
    let routes = format!(
        "[[routes]]\nprefix = \"/svc/\"\nupstream = \"http://127.0.0.1:{}/base\"\n",
        up.addr.port()
    );
    let policy = r#"
[[rules]]
id = "base"
effect = "allow"
hosts = ["127.0.0.1"]
paths = ["/base/**"]
[[rules]]
id = "no-admin"
effect = "deny"
paths = ["/base/admin/**"]
"#;
    let aw = Agentwall::start(&[("route.toml", policy)], &routes).await;
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/svc/ok", 200, Some("/base/ok")),
        ("/svc", 200, Some("/base/")),
        ("/svc/a/./b//c?x=1", 200, Some("/base/a/b/c?x=1")),
        ("/svc/admin/x", 403, None),
        ("/svc/./admin/x", 403, None),
        ("/svc//admin", 403, None),
        ("/svc/x/../admin", 403, None),
        ("/svc/%61dmin", 403, None),
        ("/svc/admin;a=b/x", 403, None),
        ("/svc/../svc/admin", 403, None),
        ("/svc/..", 404, None),
        ("/svc/../other", 404, None),
        ("/svc/%2e%2e/x", 404, None),
        ("/svc/../../x", 400, None),
        ("/svc%2fadmin", 400, None),
        ("/svcx/admin", 404, None),
        ("/SVC/ok", 404, None),
    ];
    let mut allowed = 0;
    for (target, status, upstream) in cases {
        let before = up.seen().len();
        let req = format!("GET {target} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n");
        let reply = raw(aw.proxy, req.as_bytes()).await;
        assert_eq!(reply.status, *status, "{target}: {}", reply.text());
        match upstream {
            Some(want) => {
                allowed += 1;
                assert_eq!(up.seen()[before].target, *want, "{target}");
            }
            None => assert_eq!(up.seen().len(), before, "{target} reached the upstream"),
        }
    }
    assert_eq!(up.seen().len(), allowed);
}
