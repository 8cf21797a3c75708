//! Hot reload of the policy directory, SIGHUP/admin reload, and SIGTERM shutdown with a
//! flushed audit store that a restart still lists.

mod common;

use std::time::{Duration, Instant};

use common::*;

const ALLOW_LOOPBACK: &str = r#"
name = "local"
[[rules]]
id = "loopback"
effect = "allow"
hosts = ["127.0.0.1"]
"#;

const DENY_BLOCKED: &str = r#"
name = "blocker"
[[rules]]
id = "blocked"
effect = "deny"
reason = "blocked path"
paths = ["/blocked/**"]
"#;

async fn status_of(aw: &Agentwall, url: &str) -> u16 {
    proxy_get(aw.proxy, url, "reloader").await.status
}

/// Waits until `url` answers `want`, asserting it happens within one second of `since`.
async fn takes_effect(aw: &Agentwall, url: &str, want: u16, since: Instant) {
    let ok = eventually(Duration::from_secs(1), || async {
        status_of(aw, url).await == want
    })
    .await;
    assert!(
        ok,
        "{url} did not answer {want} within 1 s of the change (took {:?}):\n{}",
        since.elapsed(),
        aw.log()
    );
}

#[tokio::test]
async fn policy_changes_take_effect_within_a_second() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(&[("local.toml", ALLOW_LOOPBACK)], "").await;
    let blocked = format!("http://127.0.0.1:{}/blocked/x", up.addr.port());
    let other = format!("http://127.0.0.1:{}/other", up.addr.port());
    assert_eq!(status_of(&aw, &blocked).await, 200);

    // Create: a new file with a deny rule.
    let t = Instant::now();
    std::fs::write(aw.policy_dir().join("blocker.toml"), DENY_BLOCKED).unwrap();
    takes_effect(&aw, &blocked, 403, t).await;

    // Modify in place.
    let t = Instant::now();
    std::fs::write(
        aw.policy_dir().join("blocker.toml"),
        DENY_BLOCKED.replace("/blocked/**", "/other/**"),
    )
    .unwrap();
    takes_effect(&aw, &other, 403, t).await;
    assert_eq!(status_of(&aw, &blocked).await, 200);

    // Editor-style atomic rename over the file.
    let t = Instant::now();
    aw.write_policy("blocker.toml", DENY_BLOCKED);
    takes_effect(&aw, &blocked, 403, t).await;
    assert_eq!(status_of(&aw, &other).await, 200);

    // Delete.
    let t = Instant::now();
    std::fs::remove_file(aw.policy_dir().join("blocker.toml")).unwrap();
    takes_effect(&aw, &blocked, 200, t).await;
}

#[tokio::test]
async fn invalid_edit_keeps_the_previous_policies() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(
        &[
            ("local.toml", ALLOW_LOOPBACK),
            ("blocker.toml", DENY_BLOCKED),
        ],
        "",
    )
    .await;
    let blocked = format!("http://127.0.0.1:{}/blocked/x", up.addr.port());
    let before = aw.admin_get("/v1/policies", None).await.json();
    assert_eq!(before["last_reload"]["ok"], true);

    // A typo on line 6: the file is rejected as a whole.
    aw.write_policy(
        "blocker.toml",
        &DENY_BLOCKED.replace("effect = \"deny\"", "effect = \"deny\"\nefect = 1"),
    );
    let failed = eventually(Duration::from_secs(2), || async {
        aw.admin_get("/v1/policies", None).await.json()["last_reload"]["ok"] == false
    })
    .await;
    assert!(failed, "the bad edit was not noticed:\n{}", aw.log());
    let status = aw.admin_get("/v1/policies", None).await.json();
    let error = status["last_reload"]["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("blocker.toml:6: unknown field `efect`"),
        "{error}"
    );
    assert_eq!(
        status["version"], before["version"],
        "the active set changed"
    );
    assert!(
        aw.log().contains("blocker.toml:6"),
        "the error is logged with file:line"
    );
    assert_eq!(
        status_of(&aw, &blocked).await,
        403,
        "the old deny still holds"
    );

    // The admin API reports the same, with 422.
    let reply = aw.admin_post("/v1/policies/reload").await;
    assert_eq!(reply.status, 422);
    assert!(reply.json()["reason"]
        .as_str()
        .unwrap()
        .contains("blocker.toml:6"));
    let metrics = aw.admin_get("/metrics", None).await.text();
    assert!(
        metrics.contains("agentwall_policy_last_reload_success 0"),
        "{metrics}"
    );

    // Fixing the file recovers.
    aw.write_policy(
        "blocker.toml",
        &DENY_BLOCKED.replace("/blocked/**", "/elsewhere/**"),
    );
    let ok = eventually(Duration::from_secs(2), || async {
        status_of(&aw, &blocked).await == 200
    })
    .await;
    assert!(ok);
    let reply = aw.admin_post("/v1/policies/reload").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["last_reload"]["ok"], true);
}

#[tokio::test]
async fn reload_does_not_drop_in_flight_requests() {
    let up = Upstream::start().await;
    let aw = Agentwall::start(
        &[("local.toml", ALLOW_LOOPBACK)],
        "[proxy]\nupstream_timeout = \"10s\"\n",
    )
    .await;
    let slow = format!("http://127.0.0.1:{}/slow", up.addr.port());
    let proxy = aw.proxy;
    let in_flight = tokio::spawn(async move { proxy_get(proxy, &slow, "a").await });
    let started = eventually(Duration::from_secs(5), || async { !up.seen().is_empty() }).await;
    assert!(started);
    // Replace the whole set (the in-flight request's policy disappears) and reload via SIGHUP.
    aw.write_policy("local.toml", &ALLOW_LOOPBACK.replace("loopback", "renamed"));
    aw.signal(libc::SIGHUP);
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "upstream ok");
    // SIGHUP did not stop the process.
    assert_eq!(aw.admin_get("/health", None).await.status, 200);
}

#[tokio::test]
async fn sigterm_flushes_the_audit_store_and_a_restart_lists_the_records() {
    let up = Upstream::start().await;
    let mut aw = Agentwall::start(&[("local.toml", ALLOW_LOOPBACK)], "").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let reply = proxy_get(
            aw.proxy,
            &format!("http://127.0.0.1:{}/r/{i}", up.addr.port()),
            "durable",
        )
        .await;
        assert_eq!(reply.status, 200);
        ids.push(reply.header("x-request-id").unwrap().to_string());
    }
    let t = Instant::now();
    let status = aw.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}:\n{}", aw.log());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(aw.log().contains("audit store flushed"));

    aw.launch().await;
    let records = aw.logs("agent=durable&limit=100").await;
    let listed: Vec<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 20, "{listed:?}");
    for id in &ids {
        assert!(listed.contains(&id.as_str()), "{id} lost");
    }
    // The hash chain continues across the restart.
    let reply = proxy_get(
        aw.proxy,
        &format!("http://127.0.0.1:{}/after", up.addr.port()),
        "durable",
    )
    .await;
    let newest = aw.record_of(reply.header("x-request-id").unwrap()).await;
    assert_eq!(newest["prev_hash"], records[0]["hash"]);
    assert_eq!(
        newest["id"].as_u64().unwrap(),
        records[0]["id"].as_u64().unwrap() + 1
    );
}

#[tokio::test]
async fn invalid_policies_at_startup_refuse_to_start_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("bad.toml"),
        "[[rules]]\nid = \"x\"\neffect = \"alow\"\nhosts = [\"a\"]\n",
    )
    .unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[policies]\ndir = \"{}\"\n[audit]\ndir = \"{}\"\n",
            policies.display(),
            dir.path().join("a").display()
        ),
    )
    .unwrap();
    for command in ["check", "run"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentwall"))
            .args([command, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("bad.toml:3: unknown variant `alow`"),
            "{command}: {stderr}"
        );
    }
}

fn reloads_ok(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("agentwall_policy_reloads_total{result=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn sighup_reloads_the_policies() {
    let aw = Agentwall::start(&[("local.toml", ALLOW_LOOPBACK)], "").await;
    let before = reloads_ok(&aw.admin_get("/metrics", None).await.text());
    aw.signal(libc::SIGHUP);
    let reloaded = eventually(Duration::from_secs(5), || async {
        reloads_ok(&aw.admin_get("/metrics", None).await.text()) > before
    })
    .await;
    assert!(reloaded, "SIGHUP did not reload:\n{}", aw.log());
    assert!(aw.log().contains("SIGHUP: reloading policies"));
    assert_eq!(aw.admin_get("/health", None).await.status, 200);
}
