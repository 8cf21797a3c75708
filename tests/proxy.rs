//! End-to-end behaviour of the data plane: real agentwall process, real upstream, raw HTTP.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn allowed_request_is_forwarded_in_origin_form_without_agent_headers() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(&[("local.toml", LOCAL_POLICY)], "").await;
    let req = format!(
        "GET http://127.0.0.1:{port}/a/./b//c?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         X-Agent-Id: agent-7\r\nProxy-Authorization: Bearer agent-secret\r\nProxy-Connection: keep-alive\r\n\
         X-Agentwall-Token: t0k3n\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        port = up.addr.port()
    );
    let reply = raw(aw.proxy, req.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "upstream ok");
    let request_id = reply
        .header("x-request-id")
        .expect("X-Request-Id on allowed responses");
    assert!(!request_id.is_empty());

    let seen = up.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/a/b/c?x=1", "normalized origin-form upstream");
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", up.addr.port()).as_str())
    );
    assert_eq!(seen.header("accept"), Some("text/plain"));
    for stripped in [
        "x-agent-id",
        "proxy-authorization",
        "proxy-connection",
        "x-agentwall-token",
    ] {
        assert_eq!(
            seen.header(stripped),
            None,
            "{stripped} must not reach the upstream"
        );
    }
}

#[tokio::test]
async fn denied_request_never_reaches_upstream() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(&[("local.toml", LOCAL_POLICY)], "").await;
    let body = "{\"leak\":\"this body must not be sent\"}";
    let req = format!(
        "POST http://127.0.0.1:{port}/secret/keys HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         X-Agent-Id: agent-7\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        port = up.addr.port(),
        len = body.len()
    );
    let reply = raw(aw.proxy, req.as_bytes()).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-agentwall-decision"), Some("deny"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json = reply.json();
    assert_eq!(json["error"], "denied");
    assert_eq!(json["policy"], "local");
    assert_eq!(json["rule"], "no-secrets");
    assert_eq!(json["reason"], "secret paths are off limits");
    assert_eq!(json["request_id"], reply.header("x-request-id").unwrap());

    // Default deny (no rule matches) is a denial too, naming no rule.
    let reply = proxy_get(aw.proxy, "http://example.invalid/x", "agent-7").await;
    assert_eq!(reply.status, 403);
    assert!(reply.json()["reason"]
        .as_str()
        .unwrap()
        .contains("default deny"));
    assert_eq!(up.connection_count(), 0, "the upstream saw a connection");
}

#[tokio::test]
async fn reverse_route_strips_prefix_and_injects_headers() {
    let up = Upstream::start().await;
    std::env::set_var("AW_TEST_ROUTE_TOKEN", "route-secret-123");
    let routes = format!(
        "[[routes]]\nprefix = \"/svc/\"\nupstream = \"http://127.0.0.1:{}/base\"\n\
         headers = {{ Authorization = \"Bearer ${{env:AW_TEST_ROUTE_TOKEN}}\" }}\n",
        up.addr.port()
    );
    let policy = r#"
[[rules]]
id = "svc"
effect = "allow"
hosts = ["127.0.0.1"]
paths = ["/base/**"]
[[rules]]
id = "no-admin"
effect = "deny"
paths = ["/base/admin/**"]
"#;
    let aw = Agentwall::start(&[("svc.toml", policy)], &routes).await;
    let req =
        "GET /svc/items/1?full=true HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer agent-own\r\n\
               X-Agent-Id: a1\r\nConnection: close\r\n\r\n";
    let reply = raw(aw.proxy, req.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last();
    assert_eq!(seen.target, "/base/items/1?full=true");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer route-secret-123")
    );
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", up.addr.port()).as_str())
    );
    assert_eq!(seen.header("x-agent-id"), None);

    // Policies see the upstream path: the deny on /base/admin applies to /svc/admin.
    let reply = raw(
        aw.proxy,
        b"GET /svc/admin/x HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 403);
    // A dot-segment cannot climb out of the route.
    let reply = raw(
        aw.proxy,
        b"GET /svc/../other HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let reply = raw(
        aw.proxy,
        b"GET /svc/%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn ambiguous_targets_are_rejected_before_the_upstream() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(&[("local.toml", LOCAL_POLICY)], "").await;
    let p = up.addr.port();
    // Rejected by the HTTP/1 parser itself (plain 400, before any phase runs).
    for head in [
        format!("GET http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: evil.example\r\n"),
        format!("GET http://user:pw@127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
        format!(
            "GET http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nHost: 127.0.0.1:{p}\r\n"
        ),
        format!("GET http:/\\127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
    ] {
        let reply = raw(
            aw.proxy,
            format!("{head}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 400, "{head}: {}", reply.text());
    }
    let cases: Vec<(String, u16)> = vec![
        (
            format!("GET http://127.0.0.1:{p}/a%2fsecret/x HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
            400,
        ),
        (
            format!("GET http://127.0.0.1:{p}/a/../../x HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
            400,
        ),
        (
            format!("GET http://127.0.0.1:{p}/a%zz HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
            400,
        ),
        (
            format!("GET http://127.0.0.1:{p}/x/..;/secret/a HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
            400,
        ),
        // Spellings of a denied path.
        (
            format!(
                "GET http://127.0.0.1:{p}/public/../secret/x HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"
            ),
            403,
        ),
        (
            format!("GET http://127.0.0.1:{p}/%73ecret/x HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
            403,
        ),
        (
            format!("GET http://127.0.0.1:{p}//secret//x HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
            403,
        ),
        (
            format!("GET http://127.0.0.1:{p}/secret;v=1/x HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
            403,
        ),
        (
            format!("GET http://127.0.0.1:{p}/./secret/x HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"),
            403,
        ),
    ];
    for (head, status) in cases {
        let reply = raw(
            aw.proxy,
            format!("{head}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(reply.status, status, "{head}: {}", reply.text());
        assert!(reply.header("x-request-id").is_some(), "{head}: {reply:?}");
    }
    assert_eq!(up.connection_count(), 0);
}

#[tokio::test]
async fn connect_is_refused_until_tunnels_land() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(&[("local.toml", LOCAL_POLICY)], "").await;
    let target = format!("127.0.0.1:{}", up.addr.port());
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let reply = raw(aw.proxy, req.as_bytes()).await;
    assert_eq!(reply.status, 405);
    assert_eq!(up.connection_count(), 0);
}

#[tokio::test]
async fn private_destinations_are_refused_by_the_egress_guard() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(
        &[("local.toml", LOCAL_POLICY)],
        "[egress]\ndeny_private = true\n",
    )
    .await;
    let reply = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/x", up.addr.port()),
        "a",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let reason = reply.json()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("loopback"), "{reason}");
    // A numeric spelling of loopback is the same address.
    let reply = proxy_get(
        aw.proxy,
        &format!("http://2130706433:{}/x", up.addr.port()),
        "a",
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(up.connection_count(), 0);
}

#[tokio::test]
async fn upstream_failures_answer_502_and_504() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(&[("local.toml", LOCAL_POLICY)], "").await;
    let closed = free_port();
    let reply = proxy_get(aw.proxy, &format!("http://127.0.0.1:{closed}/x"), "a").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error"], "bad_gateway");
    let reply = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/slow", up.addr.port()),
        "a",
    )
    .await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.json()["error"], "gateway_timeout");
    let rec = aw.record_of(reply.header("x-request-id").unwrap()).await;
    assert_eq!(rec["decision"], "error");
    assert_eq!(rec["status"], 504);
}

#[tokio::test]
async fn every_request_leaves_an_audit_record() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(&[("local.toml", LOCAL_POLICY)], "").await;
    let allowed = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/ok", up.addr.port()),
        "auditor",
    )
    .await;
    let denied = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/secret/a", up.addr.port()),
        "auditor",
    )
    .await;

    let rec = aw.record_of(allowed.header("x-request-id").unwrap()).await;
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["agent"], "auditor");
    assert_eq!(rec["mode"], "forward");
    assert_eq!(rec["method"], "GET");
    assert_eq!(rec["scheme"], "http");
    assert_eq!(rec["host"], "127.0.0.1");
    assert_eq!(rec["port"], up.addr.port());
    assert_eq!(rec["path"], "/ok");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["policy"], "local");
    assert_eq!(rec["rule"], "loopback");
    assert_eq!(rec["bytes_out"], 11);
    assert!(rec["policy_version"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(rec["hash"].as_str().unwrap().len(), 64);
    assert!(rec["ts"].as_str().unwrap().ends_with('Z'));

    let rec = aw.record_of(denied.header("x-request-id").unwrap()).await;
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["rule"], "no-secrets");
    assert_eq!(rec["status"], 403);

    // Filters and paging, newest first.
    let denies = aw.logs("decision=deny&agent=auditor").await;
    assert_eq!(denies.len(), 1);
    let page = aw
        .admin_get("/v1/logs?agent=auditor&limit=1", None)
        .await
        .json();
    assert_eq!(
        page["records"][0]["request_id"],
        denied.header("x-request-id").unwrap()
    );
    let cursor = page["next_cursor"].as_u64().expect("a next page");
    let page2 = aw
        .logs(&format!("agent=auditor&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(
        page2[0]["request_id"],
        allowed.header("x-request-id").unwrap()
    );
    assert!(aw.logs("agent=nobody").await.is_empty());
    let bad = aw.admin_get("/v1/logs?decision=maybe", None).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(&[("local.toml", LOCAL_POLICY)], "").await;
    let health = aw.admin_get("/health", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "healthy");
    assert_eq!(health.json()["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(aw.admin_get("/health/live", None).await.status, 200);
    assert_eq!(aw.admin_get("/health/ready", None).await.status, 200);

    proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/m", up.addr.port()),
        "m",
    )
    .await;
    proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/secret/m", up.addr.port()),
        "m",
    )
    .await;
    // Counted in the logging phase, just after the response: poll.
    let needles = [
        "agentwall_requests_total{decision=\"allow\",mode=\"forward\"} 1",
        "agentwall_requests_total{decision=\"deny\",mode=\"forward\"} 1",
        "agentwall_request_duration_seconds_count 2",
        "agentwall_policy_rules 2",
        "agentwall_policy_last_reload_success 1",
    ];
    let complete = eventually(Duration::from_secs(5), || async {
        let metrics = aw.admin_get("/metrics", None).await.text();
        needles.iter().all(|n| metrics.contains(n))
    })
    .await;
    let metrics = aw.admin_get("/metrics", None).await.text();
    assert!(complete, "missing some of {needles:?} in\n{metrics}");
}

#[tokio::test]
async fn admin_api_requires_the_token_when_set() {
    let aw = Agentwall::start_with_token(&[("local.toml", LOCAL_POLICY)], "", "adm-s3cret").await;
    let reply = aw.admin_get("/v1/logs", None).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        aw.admin_get("/v1/logs", Some("adm-s3crex")).await.status,
        401
    );
    assert_eq!(
        aw.admin_get("/v1/policies", Some("wrong")).await.status,
        401
    );
    assert_eq!(
        aw.admin_get("/v1/logs", Some("adm-s3cret")).await.status,
        200
    );
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(aw.admin_get("/health", None).await.status, 200);
    assert_eq!(aw.admin_get("/metrics", None).await.status, 200);
}

#[tokio::test]
async fn monitor_rules_are_recorded_as_shadow_and_never_block() {
    let up = Upstream::start().await;
    let trial = r#"
name = "trial"
mode = "monitor"
[[rules]]
id = "no-exports"
effect = "deny"
reason = "exports are under review"
paths = ["/export/**"]
[[rules]]
id = "maybe-other"
effect = "allow"
hosts = ["other.invalid"]
"#;
    let aw = Agentwall::start(&[("local.toml", LOCAL_POLICY), ("trial.toml", trial)], "").await;
    let reply = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/export/all", up.addr.port()),
        "m",
    )
    .await;
    assert_eq!(reply.status, 200, "a monitor deny never blocks");
    let rec = aw.record_of(reply.header("x-request-id").unwrap()).await;
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["rule"], "loopback");
    assert_eq!(rec["shadow"], "trial/no-exports:deny");

    let reply = proxy_get(aw.proxy, "http://other.invalid/", "m").await;
    assert_eq!(reply.status, 403, "a monitor allow never allows");
    let rec = aw.record_of(reply.header("x-request-id").unwrap()).await;
    assert_eq!(rec["shadow"], "trial/maybe-other:allow");

    let reply = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/plain", up.addr.port()),
        "m",
    )
    .await;
    let rec = aw.record_of(reply.header("x-request-id").unwrap()).await;
    assert!(rec["shadow"].is_null());
}

#[tokio::test]
async fn injected_credentials_are_scrubbed_from_responses() {
    let up = Upstream::start().await;
    std::env::set_var("AW_TEST_SCRUB_TOKEN", "ghp_0123456789abcdefSECRET");
    let routes = format!(
        "[[routes]]\nprefix = \"/gh/\"\nupstream = \"http://127.0.0.1:{p}\"\n\
         headers = {{ Authorization = \"Bearer ${{env:AW_TEST_SCRUB_TOKEN}}\" }}\n\
         [[routes]]\nprefix = \"/raw/\"\nupstream = \"http://127.0.0.1:{p}\"\nscrub_response = false\n\
         headers = {{ Authorization = \"Bearer ${{env:AW_TEST_SCRUB_TOKEN}}\" }}\n",
        p = up.addr.port()
    );
    let aw = Agentwall::start(&[("local.toml", LOCAL_POLICY)], &routes).await;
    let reply = raw(
        aw.proxy,
        b"GET /gh/echo HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        up.last().header("authorization"),
        Some("Bearer ghp_0123456789abcdefSECRET")
    );
    assert_eq!(up.last().header("accept-encoding"), Some("identity"));
    let body = reply.text();
    assert!(!body.contains("ghp_0123456789abcdefSECRET"), "{body}");
    assert_eq!(body, "you sent: [REDACTED] (token part [REDACTED])");
    assert_eq!(reply.header("x-echo-auth"), Some("[REDACTED]"));
    let cookies: Vec<&str> = reply
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, vec!["a=1", "t=[REDACTED]"]);
    // The secret is in no log line either.
    assert!(!aw.log().contains("ghp_0123456789abcdefSECRET"));

    // A compressed body could hide the secret from the scan: refused, never passed on.
    let reply = raw(
        aw.proxy,
        b"GET /gh/gzip HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.json()["reason"]
            .as_str()
            .unwrap()
            .contains("compressed"),
        "{}",
        reply.text()
    );

    // scrub_response = false leaves the response alone.
    let reply = raw(
        aw.proxy,
        b"GET /raw/echo HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.text().contains("ghp_0123456789abcdefSECRET"));
}

/// An audit queue of one slot, held by a slow request for its whole life (3 s).
async fn hold_the_only_audit_slot(
    on_full: &str,
) -> (Upstream, Agentwall, tokio::task::JoinHandle<Reply>) {
    let up = Upstream::start().await;
    let aw = Agentwall::start(
        &[("local.toml", LOCAL_POLICY)],
        &format!(
            "[proxy]\nupstream_timeout = \"10s\"\n[audit]\nqueue = 1\non_full = \"{on_full}\"\n"
        ),
    )
    .await;
    let slow = format!("http://127.0.0.1:{}/slow", up.addr.port());
    let proxy = aw.proxy;
    let held = tokio::spawn(async move { proxy_get(proxy, &slow, "a").await });
    assert!(eventually(Duration::from_secs(5), || async { !up.seen().is_empty() }).await);
    (up, aw, held)
}

#[tokio::test]
async fn a_full_audit_queue_refuses_with_503_rather_than_lose_records() {
    let (up, aw, held) = hold_the_only_audit_slot("block").await;
    let reply = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/next", up.addr.port()),
        "a",
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.json()["error"], "unavailable");
    assert_eq!(
        up.seen().len(),
        1,
        "the refused request reached the upstream"
    );
    assert_eq!(held.await.unwrap().status, 200);
    // Room again: requests pass and every admitted one was recorded.
    let reply = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/after", up.addr.port()),
        "a",
    )
    .await;
    assert_eq!(reply.status, 200);
    aw.record_of(reply.header("x-request-id").unwrap()).await;
    let metrics = aw.admin_get("/metrics", None).await.text();
    assert!(
        metrics.contains("agentwall_audit_dropped_total 1"),
        "only the 503 itself goes unrecorded:\n{metrics}"
    );
}

#[tokio::test]
async fn with_on_full_drop_requests_pass_and_lost_records_are_counted() {
    let (up, aw, held) = hold_the_only_audit_slot("drop").await;
    let reply = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/next", up.addr.port()),
        "a",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(held.await.unwrap().status, 200);
    let dropped = eventually(Duration::from_secs(5), || async {
        aw.admin_get("/metrics", None)
            .await
            .text()
            .contains("agentwall_audit_dropped_total 1")
    })
    .await;
    assert!(dropped);
}
