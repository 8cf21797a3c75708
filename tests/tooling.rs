//! `agentwall check`, `explain` and `test` as a user runs them.

use std::path::Path;
use std::process::Command;

fn agentwall(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentwall"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A config + policy dir in a temp dir.
fn setup(policy: &str, config_extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies/tests")).unwrap();
    std::fs::write(dir.path().join("policies/p.toml"), policy).unwrap();
    std::fs::write(
        dir.path().join("agentwall.toml"),
        format!("[policies]\ndir = \"policies\"\n{config_extra}"),
    )
    .unwrap();
    dir
}

const POLICY: &str = r#"
name = "api"
agents = ["bot-*"]
[[rules]]
id = "read"
effect = "allow"
hosts = ["api.example.com"]
methods = ["GET"]
[[rules]]
id = "json-writes"
effect = "allow"
hosts = ["api.example.com"]
methods = ["POST"]
headers = { "content-type" = "application/json*" }
[[rules]]
id = "no-admin"
effect = "deny"
reason = "admin is off limits"
paths = ["/admin/**"]
[[rules]]
id = "watch-exports"
effect = "deny"
mode = "monitor"
paths = ["/export/**"]
"#;

#[test]
fn shipped_policies_pass_their_tests() {
    let (code, stdout, stderr) = agentwall(&["test", "--config", "conf/agentwall.toml"], repo());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn failing_cases_exit_1_with_file_line_and_why() {
    let dir = setup(POLICY, "");
    std::fs::write(
        dir.path().join("policies/tests/cases.toml"),
        r#"
[[case]]
name = "reads"
agent = "bot-1"
url = "https://api.example.com/items"
expect = "allow"
rule = "api/read"

[[case]]
name = "wrong on purpose"
agent = "bot-1"
method = "DELETE"
url = "https://api.example.com/items"
expect = "allow"

[[case]]
name = "wrong rule on purpose"
agent = "bot-1"
url = "https://api.example.com/admin/x"
expect = "deny"
rule = "api/read"
"#,
    )
    .unwrap();
    let (code, stdout, _) = agentwall(&["test", "--config", "agentwall.toml"], dir.path());
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("ok    policies/tests/cases.toml:2 reads"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  policies/tests/cases.toml:9 wrong on purpose: expected allow, got deny (default;"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  policies/tests/cases.toml:16 wrong rule on purpose: expected rule api/read, decided by api/no-admin"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 2 failed"), "{stdout}");

    // A malformed case file is a failure with its line.
    std::fs::write(
        dir.path().join("policies/tests/bad.toml"),
        "[[case]]\nurl = \"/x\"\nexpect = \"maybe\"\n",
    )
    .unwrap();
    let (code, stdout, _) = agentwall(
        &["test", "--config", "agentwall.toml", "policies/tests"],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        stdout.contains("policies/tests/bad.toml:3: unknown variant `maybe`"),
        "{stdout}"
    );

    // No cases at all is not a pass.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = agentwall(
        &[
            "test",
            "--config",
            "agentwall.toml",
            empty.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("no test cases"), "{stderr}");
}

fn explain(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["explain", "--config", "agentwall.toml"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = agentwall(&all, dir);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn explain_prints_the_decision_and_the_normalized_target() {
    let dir = setup(
        POLICY,
        "[[routes]]\nprefix = \"/api/\"\nupstream = \"https://api.example.com/v2\"\n",
    );
    let d = explain(
        dir.path(),
        &[
            "--agent",
            "bot-1",
            "--url",
            "https://API.example.com./a/../items//1?x=1",
        ],
    );
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["status"], 200);
    assert_eq!(d["policy"], "api");
    assert_eq!(d["rule"], "read");
    assert_eq!(d["mode"], "forward");
    assert_eq!(d["target"], "https://api.example.com/items/1?x=1");
    assert!(d["policy_version"].as_str().unwrap().starts_with("sha256:"));

    let d = explain(
        dir.path(),
        &[
            "--agent",
            "bot-1",
            "--url",
            "https://api.example.com/admin/users",
        ],
    );
    assert_eq!(
        (d["decision"].as_str(), d["status"].as_u64()),
        (Some("deny"), Some(403))
    );
    assert_eq!(d["reason"], "admin is off limits");

    // Headers are a match dimension.
    let post = [
        "--agent",
        "bot-1",
        "--method",
        "POST",
        "--url",
        "https://api.example.com/items",
    ];
    assert_eq!(explain(dir.path(), &post)["decision"], "deny");
    let mut json_post = post.to_vec();
    json_post.extend(["--header", "Content-Type: application/json"]);
    assert_eq!(explain(dir.path(), &json_post)["rule"], "json-writes");

    // Monitor rules show up as shadow.
    let d = explain(
        dir.path(),
        &[
            "--agent",
            "bot-1",
            "--url",
            "https://api.example.com/export/all",
        ],
    );
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["shadow"], "api/watch-exports:deny");

    // Routes: the policy sees the upstream request.
    let d = explain(dir.path(), &["--agent", "bot-1", "--url", "/api/items"]);
    assert_eq!(d["mode"], "reverse");
    assert_eq!(d["target"], "https://api.example.com/v2/items");
    assert_eq!(d["decision"], "allow");

    // Refusals before policy: status and reason, no rule.
    let d = explain(
        dir.path(),
        &[
            "--agent",
            "bot-1",
            "--url",
            "https://api.example.com/a/%2e%2e/%2e%2e/x",
        ],
    );
    assert_eq!(
        (d["decision"].as_str(), d["status"].as_u64()),
        (Some("deny"), Some(400))
    );
    let d = explain(dir.path(), &["--agent", "bot-1", "--url", "/nowhere"]);
    assert_eq!(d["status"], 404);
}

#[test]
fn check_reports_every_error_with_file_and_line() {
    let dir = setup(
        "[[rules]]\nid = \"a\"\neffect = \"allow\"\nhosts = [\"ok.com\"]\nmethods = [\"get\"]\n[[rules]]\nid = \"a\"\neffect = \"deny\"\npaths = [\"nope\"]\n",
        "",
    );
    let (code, stdout, stderr) = agentwall(&["check", "--config", "agentwall.toml"], dir.path());
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains("policies/p.toml:5: methods are case-sensitive"),
        "{stderr}"
    );
    assert!(
        stderr.contains("policies/p.toml:7: duplicate rule id \"a\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("policies/p.toml:9: path glob \"nope\" must start with '/'"),
        "{stderr}"
    );
    let (code, stdout, _) = agentwall(&["check", "--config", "conf/agentwall.toml"], repo());
    assert_eq!(code, 0);
    assert!(stdout.starts_with("ok: 3 policies"), "{stdout}");
}
