//! Every example in README.md and docs/ is exercised here, as are the shipped configuration,
//! policies, systemd unit and Dockerfile.

mod common;

use std::path::Path;

use agentwall::config::{Config, DefaultEffect};
use agentwall::policy::normalize::Scheme;
use agentwall::policy::{PolicySet, RequestFacts, Verdict};
use common::*;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fenced code blocks of a markdown file with the given info string.
fn blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) if info.trim() == lang => current = Some(String::new()),
            (Some(block), Some("")) => {
                out.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    out
}

fn set_example_env() {
    std::env::set_var("GITHUB_TOKEN", "example-github-token");
    std::env::set_var("OPENAI_API_KEY", "example-openai-key");
    std::env::set_var("AGENTWALL_ADMIN_TOKEN", "example-admin-token");
    std::env::set_var(
        "AGENTWALL_JWT_SECRET",
        "example-jwt-secret-of-at-least-32-bytes",
    );
}

#[test]
fn config_examples_parse() {
    set_example_env();
    let examples = blocks(&read("docs/config.md"), "toml");
    assert!(examples.len() >= 2);
    for (i, text) in examples.iter().enumerate() {
        Config::parse(&format!("docs/config.md block {i}"), text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    let jwt = examples
        .iter()
        .find(|e| e.contains("[auth.jwt]"))
        .expect("a JWT example");
    let jwt = Config::parse("jwt", jwt).unwrap();
    agentwall::identity::Identity::from_config(&jwt.auth).unwrap();
    let full = Config::parse("full", &examples[0]).unwrap();
    assert_eq!(full.routes.len(), 1);
    assert_eq!(
        full.routes[0].headers["Authorization"],
        "Bearer example-github-token"
    );
}

#[test]
fn shipped_configs_load() {
    set_example_env();
    let default = Config::parse("conf/agentwall.toml", &read("conf/agentwall.toml")).unwrap();
    assert_eq!(default.proxy.listen, vec!["127.0.0.1:8080"]);
    assert_eq!(default.admin.listen, "127.0.0.1:9090");
    let production = Config::parse("conf/production.toml", &read("conf/production.toml")).unwrap();
    assert_eq!(production.admin.token, "example-admin-token");
    assert_eq!(production.auth.mode, agentwall::config::AuthMode::Jwt);
    // With its public key in place, the production identity configuration loads.
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keypair(dir.path(), "rsa");
    let mut with_key = production.clone();
    with_key.auth.jwt.as_mut().unwrap().public_key_file = public.display().to_string();
    agentwall::identity::Identity::from_config(&with_key.auth).unwrap();
    assert!(production.egress.deny_private);
    // Without the variable, startup is refused naming it (another name: tests share the env).
    let unset =
        read("conf/production.toml").replace("AGENTWALL_ADMIN_TOKEN", "AGENTWALL_TEST_UNSET_TOKEN");
    let err = Config::parse("conf/production.toml", &unset).unwrap_err();
    assert!(
        err.to_string()
            .contains("AGENTWALL_TEST_UNSET_TOKEN is not set"),
        "{err}"
    );
}

#[test]
fn policy_examples_compile() {
    let policies = blocks(&read("docs/policies.md"), "toml");
    for (i, text) in policies
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.contains("[[case]]"))
    {
        PolicySet::compile(
            &[(format!("example{i}.toml"), text.clone())],
            DefaultEffect::Deny,
        )
        .unwrap_or_else(|e| panic!("block {i}: {e:?}\n{text}"));
    }
}

#[test]
fn policy_doc_error_messages_are_the_real_ones() {
    let doc = read("docs/policies.md");
    let cases = [
        ("[[rules]]\nid = \"read\"\neffect = \"alow\"\n", "unknown variant `alow`, expected `allow` or `deny`"),
        (
            "[[rules]]\nid = \"read\"\neffect = \"allow\"\nmethods = [\"get\"]\n",
            "methods are case-sensitive: write \"GET\", not \"get\"",
        ),
        (
            "[[rules]]\nid = \"read\"\neffect = \"allow\"\n",
            "rule \"read\" has no match dimension (schemes, hosts, ports, methods, paths, query, headers, claims); write hosts = [\"**\"] to match everything",
        ),
    ];
    for (text, message) in cases {
        let errors =
            PolicySet::compile(&[("p.toml".into(), text.into())], DefaultEffect::Deny).unwrap_err();
        assert!(errors[0].message.contains(message), "{errors:?}");
        assert!(
            doc.contains(message),
            "docs/policies.md does not show: {message}"
        );
    }
}

fn facts<'a>(
    agent: &'a str,
    method: &'a str,
    scheme: Scheme,
    host: &'a str,
    path: &'a str,
) -> RequestFacts<'a> {
    RequestFacts::new(agent, method, scheme, host, scheme.default_port(), path)
}

#[test]
fn shipped_policies_decide_as_documented() {
    let set = PolicySet::load_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        DefaultEffect::Deny,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let https = Scheme::Https;
    let cases = [
        (
            facts("research-1", "GET", https, "api.github.com", "/repos/a/b"),
            Verdict::Allow,
            Some("github-readonly/read"),
        ),
        (
            facts("research-1", "POST", https, "api.github.com", "/repos/a/b"),
            Verdict::Deny,
            None,
        ),
        (
            facts(
                "research-1",
                "GET",
                https,
                "api.github.com",
                "/repos/a/b/hooks/1",
            ),
            Verdict::Deny,
            Some("github-readonly/no-admin"),
        ),
        (
            facts("ops-1", "GET", https, "api.github.com", "/repos/a/b"),
            Verdict::Deny,
            None,
        ),
        (
            facts("demo", "GET", Scheme::Http, "example.com", "/"),
            Verdict::Allow,
            Some("public-apis/read"),
        ),
        (
            facts("demo", "GET", Scheme::Http, "example.org", "/"),
            Verdict::Deny,
            None,
        ),
        (
            facts("demo", "GET", Scheme::Http, "169.254.169.254", "/latest"),
            Verdict::Deny,
            Some("guardrails/no-metadata"),
        ),
    ];
    for (f, verdict, rule) in cases {
        let d = set.evaluate(&f);
        assert_eq!(d.verdict, verdict, "{f:?}");
        assert_eq!(d.rule().map(|r| r.qualified.as_str()), rule, "{f:?}");
    }
    let delete = set.evaluate(&facts("demo", "DELETE", Scheme::Http, "example.com", "/"));
    assert!(
        delete.shadow.is_none(),
        "monitor deny on a denied request changes nothing"
    );
}

#[test]
fn readme_quickstart_is_two_commands_and_ci_runs_the_test_one() {
    let readme = read("README.md");
    let quickstart = readme.split("## Quickstart").nth(1).unwrap();
    let commands: Vec<String> = blocks(
        quickstart.split("Then, from another shell").next().unwrap(),
        "sh",
    );
    assert_eq!(
        commands,
        vec!["cargo run --release -- run\n", "cargo test\n"]
    );
    let ci = read(".ci/run");
    let last_command = ci
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap();
    assert_eq!(last_command, "cargo test");
}

#[tokio::test]
async fn readme_denial_and_admin_examples_work() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let shipped: Vec<(String, String)> = std::fs::read_dir(policies)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = shipped
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let aw = Agentwall::start(&refs, "").await;
    // curl -x http://127.0.0.1:8080 -H 'X-Agent-Id: demo' http://example.org/
    let reply = proxy_get(aw.proxy, "http://example.org/", "demo").await;
    assert_eq!(reply.status, 403);
    let json = reply.json();
    assert_eq!(json["error"], "denied");
    assert_eq!(
        json["reason"],
        "no policy allows this request (default deny)"
    );
    let readme = read("README.md");
    assert!(readme.contains(r#"{"error":"denied","reason":"no policy allows this request (default deny)","request_id":"…"}"#));

    // docs/admin-api.md: curl 'http://127.0.0.1:9090/v1/logs?decision=deny&since=1h&limit=20'
    let id = reply.header("x-request-id").unwrap();
    aw.record_of(id).await;
    let logs = aw
        .admin_get("/v1/logs?decision=deny&since=1h&limit=20", None)
        .await
        .json();
    let record = &logs["records"][0];
    assert_eq!(record["request_id"], id);

    // The documented record shows exactly the fields a real one has.
    let doc = read("docs/admin-api.md");
    let example = blocks(&doc, "json").into_iter().next().unwrap();
    let example: serde_json::Value = serde_json::from_str(&example.replace('…', "")).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&example["records"][0]), keys(record));
    assert_eq!(keys(&example), keys(&logs));

    let status = aw.admin_get("/v1/policies", None).await.json();
    let documented: serde_json::Value =
        serde_json::from_str(&blocks(&doc, "json")[1].replace('…', "")).unwrap();
    assert_eq!(keys(&documented), keys(&status));
    assert_eq!(
        keys(&documented["policies"][0]),
        keys(&status["policies"][0])
    );
    assert_eq!(
        keys(&documented["last_reload"]),
        keys(&status["last_reload"])
    );
}

#[test]
fn systemd_unit_is_hardened_and_valid() {
    let unit = read("systemd/agentwall.service");
    for directive in [
        "User=agentwall",
        "StateDirectory=agentwall",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == directive),
            "missing {directive}"
        );
    }
    // systemd-analyze, where present, checks the unit against a real systemd.
    if let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    {
        if out.status.success() {
            let dir = tempfile::tempdir().unwrap();
            let bin = env!("CARGO_BIN_EXE_agentwall");
            let path = dir.path().join("agentwall.service");
            std::fs::write(&path, unit.replace("/usr/local/bin/agentwall", bin)).unwrap();
            let out = std::process::Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let problems: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains("agentwall.service"))
                .filter(|l| !l.contains("Failed to resolve user") && !l.contains("No such file"))
                .collect();
            assert!(problems.is_empty(), "systemd-analyze verify:\n{stderr}");
        }
    }
}

#[test]
fn dockerfile_is_multistage_nonroot_with_healthcheck() {
    let docker = read("Dockerfile");
    assert_eq!(docker.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(docker.contains("cmake"));
    assert!(docker.lines().any(|l| l.starts_with("USER agentwall")));
    assert!(docker.contains("EXPOSE 8080 9090"));
    assert!(docker.contains("HEALTHCHECK") && docker.contains("/health"));
    assert!(docker.contains("VOLUME [\"/etc/agentwall/policies\", \"/var/lib/agentwall\"]"));
    assert!(docker.contains("ENV AGENTWALL_CONFIG="));
    for copied in ["conf/production.toml", "policies/"] {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(copied).exists(),
            "{copied}"
        );
    }
}

/// Runs the agentwall binary in `dir`.
fn run_in(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentwall"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The first policy example, its test cases and the `explain` example, run for real.
#[test]
fn policy_doc_tooling_examples_run() {
    let doc = read("docs/policies.md");
    let tomls = blocks(&doc, "toml");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies/tests")).unwrap();
    std::fs::write(dir.path().join("policies/github.toml"), &tomls[0]).unwrap();
    let cases = tomls
        .iter()
        .find(|t| t.contains("[[case]]"))
        .expect("a test case example");
    std::fs::write(dir.path().join("policies/tests/github.toml"), cases).unwrap();
    std::fs::write(
        dir.path().join("agentwall.toml"),
        "[policies]\ndir = \"policies\"\n",
    )
    .unwrap();

    let plain = blocks(&doc, "");
    let report = plain
        .iter()
        .find(|b| b.starts_with("ok "))
        .expect("a test report example");
    let (code, stdout) = run_in(dir.path(), &["test", "--config", "agentwall.toml"]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(&stdout, report);

    let command = blocks(&doc, "sh")
        .into_iter()
        .find(|b| b.starts_with("agentwall explain"))
        .unwrap();
    let mut args: Vec<&str> = command.split_whitespace().skip(1).collect();
    args.extend(["--config", "agentwall.toml"]);
    let (code, stdout) = run_in(dir.path(), &args);
    assert_eq!(code, 0);
    let mut got: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let documented: serde_json::Value = serde_json::from_str(&blocks(&doc, "json")[0]).unwrap();
    assert!(got["policy_version"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    got["policy_version"] = documented["policy_version"].clone();
    assert_eq!(got, documented);
}

/// The key-generation commands in docs/security.md, run for real: each key pair signs a
/// token that the documented algorithm verifies with the documented public key file.
#[test]
fn security_doc_key_commands_work() {
    use agentwall::config::JwtConfig;
    let doc = read("docs/security.md");
    let script = blocks(&doc, "sh").into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("openssl "))
        .collect();
    assert_eq!(
        lines.len(),
        6,
        "RSA, EC and Ed25519: generate, then export the public key"
    );
    for (pair, alg) in lines.chunks(2).zip(["RS256", "ES256", "EdDSA"]) {
        for line in pair {
            let args: Vec<&str> = line
                .split('#')
                .next()
                .unwrap()
                .split_whitespace()
                .skip(1)
                .collect();
            let ok = std::process::Command::new("openssl")
                .args(&args)
                .current_dir(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(ok.success(), "{line}");
        }
        let private = std::fs::read(dir.path().join("issuer.key")).unwrap();
        let (alg, key) = match alg {
            "RS256" => (
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::EncodingKey::from_rsa_pem(&private),
            ),
            "ES256" => (
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::EncodingKey::from_ec_pem(&private),
            ),
            _ => (
                jsonwebtoken::Algorithm::EdDSA,
                jsonwebtoken::EncodingKey::from_ed_pem(&private),
            ),
        };
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &serde_json::json!({ "sub": "research-1", "exp": exp }),
            &key.unwrap(),
        )
        .unwrap();
        let verifier = agentwall::identity::JwtVerifier::new(&JwtConfig {
            algorithms: vec![format!("{alg:?}")],
            public_key_file: dir.path().join("agents.pem").display().to_string(),
            ..JwtConfig::default()
        })
        .unwrap();
        assert_eq!(
            verifier.verify(&token).unwrap().agent.as_str(),
            "research-1"
        );
    }
    // The HS256 line: agentwall token mints what the proxy accepts.
    assert!(script.contains("agentwall token --sub research-1 --ttl 1h --claim team=research"));
}
