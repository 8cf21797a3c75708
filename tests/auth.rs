//! JWT identity: every key type accepted with its pinned algorithm, every attack refused
//! with its own reason (library level, keys generated here with openssl), and the proxy's
//! HTTP behaviour in JWT mode (407/401, no spoofing, tokens stripped, claims in policies).

mod common;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use agentwall::config::JwtConfig;
use agentwall::identity::{AuthFailure, JwtVerifier};
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 600, "iat": now(), "team": "research" })
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn config(algs: &[&str]) -> JwtConfig {
    JwtConfig {
        algorithms: algs.iter().map(|a| a.to_string()).collect(),
        leeway: agentwall::config::HumanDuration(std::time::Duration::ZERO),
        ..JwtConfig::default()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn every_key_type_verifies_with_its_pinned_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = keypair(dir.path(), "rsa");
    let cases: Vec<(&str, Algorithm, (PathBuf, PathBuf))> = vec![
        ("RS256", Algorithm::RS256, rsa.clone()),
        ("RS384", Algorithm::RS384, rsa.clone()),
        ("RS512", Algorithm::RS512, rsa.clone()),
        ("PS256", Algorithm::PS256, rsa.clone()),
        ("PS384", Algorithm::PS384, rsa.clone()),
        ("PS512", Algorithm::PS512, rsa.clone()),
        ("ES256", Algorithm::ES256, keypair(dir.path(), "p256")),
        ("ES384", Algorithm::ES384, keypair(dir.path(), "p384")),
        ("EdDSA", Algorithm::EdDSA, keypair(dir.path(), "ed25519")),
    ];
    for (name, alg, (private, public)) in cases {
        let pem = std::fs::read(&private).unwrap();
        let key = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap();
        let verifier = JwtVerifier::new(&JwtConfig {
            public_key_file: public.display().to_string(),
            ..config(&[name])
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let token = sign(alg, &key, &claims("agent-1"));
        let verified = verifier
            .verify(&token)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.agent.as_str(), "agent-1", "{name}");
        assert_eq!(verified.claims["team"], "research");
        // A flipped signature byte is a bad signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[2])
            .unwrap();
        sig[5] ^= 0x01;
        parts[2] = b64(&sig);
        assert_eq!(
            verifier.verify(&parts.join(".")).unwrap_err(),
            AuthFailure::BadSignature,
            "{name}"
        );
    }
    // HMAC, all three sizes.
    for (name, alg) in [
        ("HS256", Algorithm::HS256),
        ("HS384", Algorithm::HS384),
        ("HS512", Algorithm::HS512),
    ] {
        let verifier = JwtVerifier::new(&JwtConfig {
            secret: SECRET.into(),
            ..config(&[name])
        })
        .unwrap();
        let token = sign(
            alg,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &claims("agent-2"),
        );
        assert_eq!(verifier.verify(&token).unwrap().agent.as_str(), "agent-2");
        let forged = sign(
            alg,
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
            &claims("agent-2"),
        );
        assert_eq!(
            verifier.verify(&forged).unwrap_err(),
            AuthFailure::BadSignature
        );
    }
}

#[test]
fn attacks_are_refused_each_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa_private, rsa_public) = keypair(dir.path(), "rsa");
    let hs = JwtVerifier::new(&JwtConfig {
        secret: SECRET.into(),
        issuer: "agentwall".into(),
        audience: "proxy".into(),
        ..config(&["HS256"])
    })
    .unwrap();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let good =
        json!({ "sub": "a1", "exp": now() + 600, "iss": "agentwall", "aud": ["x", "proxy"] });
    assert!(hs.verify(&sign(Algorithm::HS256, &key, &good)).is_ok());

    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        sign(Algorithm::HS256, &key, &c)
    };
    let header = |h: Value| b64(h.to_string().as_bytes());
    let payload = b64(good.to_string().as_bytes());
    let cases: Vec<(String, AuthFailure)> = vec![
        ("not-a-token".into(), AuthFailure::Malformed),
        ("a.b".into(), AuthFailure::Malformed),
        ("a.b.c.d".into(), AuthFailure::Malformed),
        (
            format!("{}.{payload}.", header(json!({"alg": "none"}))),
            AuthFailure::AlgNone,
        ),
        (
            format!("{}.{payload}.", header(json!({"alg": "NoNe"}))),
            AuthFailure::AlgNone,
        ),
        (
            sign(Algorithm::HS512, &key, &good),
            AuthFailure::AlgNotAllowed,
        ),
        (
            format!("{}.{payload}.sig", header(json!({"alg": "HS999"}))),
            AuthFailure::AlgNotAllowed,
        ),
        (
            format!(
                "{}.{payload}.sig",
                header(json!({"alg": "HS256", "crit": ["exp"]}))
            ),
            AuthFailure::Malformed,
        ),
        (with(json!({ "exp": now() - 10 })), AuthFailure::Expired),
        (with(json!({ "exp": null })), AuthFailure::NoExpiry),
        (with(json!({ "exp": "tomorrow" })), AuthFailure::Malformed),
        (
            with(json!({ "nbf": now() + 600 })),
            AuthFailure::NotYetValid,
        ),
        (
            with(json!({ "iss": "someone-else" })),
            AuthFailure::WrongIssuer,
        ),
        (with(json!({ "iss": null })), AuthFailure::WrongIssuer),
        (with(json!({ "aud": "other" })), AuthFailure::WrongAudience),
        (with(json!({ "aud": null })), AuthFailure::WrongAudience),
        (with(json!({ "sub": null })), AuthFailure::MissingAgentClaim),
        (with(json!({ "sub": "" })), AuthFailure::MissingAgentClaim),
        (
            with(json!({ "sub": "spaces are not ids" })),
            AuthFailure::MissingAgentClaim,
        ),
        (with(json!({ "sub": 42 })), AuthFailure::MissingAgentClaim),
    ];
    for (token, want) in cases {
        assert_eq!(hs.verify(&token).map(|_| ()), Err(want), "{token}");
    }

    // Key confusion: an HS256 token "signed" with the RSA public key as the HMAC secret.
    let rs = JwtVerifier::new(&JwtConfig {
        public_key_file: rsa_public.display().to_string(),
        ..config(&["RS256"])
    })
    .unwrap();
    let public_pem = std::fs::read(&rsa_public).unwrap();
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public_pem),
        &claims("a1"),
    );
    assert_eq!(rs.verify(&confused).unwrap_err(), AuthFailure::KeyConfusion);
    let rsa_key = EncodingKey::from_rsa_pem(&std::fs::read(&rsa_private).unwrap()).unwrap();
    assert!(rs
        .verify(&sign(Algorithm::RS256, &rsa_key, &claims("a1")))
        .is_ok());
    // RS512 with the same key is not pinned.
    assert_eq!(
        rs.verify(&sign(Algorithm::RS512, &rsa_key, &claims("a1")))
            .unwrap_err(),
        AuthFailure::AlgNotAllowed
    );

    // Configurations that would allow confusion or guessing are refused.
    for bad in [
        JwtConfig {
            secret: SECRET.into(),
            ..config(&["HS256", "RS256"])
        },
        JwtConfig {
            secret: "short".into(),
            ..config(&["HS256"])
        },
        JwtConfig {
            secret: SECRET.into(),
            ..config(&["none"])
        },
        JwtConfig {
            secret: SECRET.into(),
            ..config(&[])
        },
        JwtConfig {
            secret: SECRET.into(),
            ..config(&["RS256"])
        },
        JwtConfig {
            public_key_file: rsa_public.display().to_string(),
            ..config(&["ES256"])
        },
    ] {
        assert!(JwtVerifier::new(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn cached_tokens_still_expire_and_jwks_keys_are_found_by_kid() {
    let verifier = JwtVerifier::new(&JwtConfig {
        secret: SECRET.into(),
        ..config(&["HS256"])
    })
    .unwrap();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token = sign(
        Algorithm::HS256,
        &key,
        &json!({ "sub": "c", "exp": now() + 60 }),
    );
    assert!(verifier.verify_at(&token, now()).is_ok());
    assert!(verifier.verify_at(&token, now()).is_ok(), "cache hit");
    assert_eq!(
        verifier.verify_at(&token, now() + 3600).unwrap_err(),
        AuthFailure::Expired
    );

    // JWKS with two keys: the token's kid picks one; an unknown kid is refused.
    let dir = tempfile::tempdir().unwrap();
    let (p1, _) = keypair(dir.path(), "p256");
    let jwk = |private: &Path, kid: &str| -> Value {
        let out = std::process::Command::new("openssl")
            .args([
                "pkey",
                "-in",
                private.to_str().unwrap(),
                "-pubout",
                "-outform",
                "DER",
            ])
            .output()
            .unwrap();
        // The last 65 bytes of a P-256 SubjectPublicKeyInfo are 0x04 || X || Y.
        let point = &out.stdout[out.stdout.len() - 65..];
        json!({ "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64(&point[1..33]), "y": b64(&point[33..]) })
    };
    let sub = dir.path().join("second");
    std::fs::create_dir_all(&sub).unwrap();
    let (p2, _) = keypair(&sub, "p256");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({ "keys": [jwk(&p1, "one"), jwk(&p2, "two")] }).to_string(),
    )
    .unwrap();
    let verifier = JwtVerifier::new(&JwtConfig {
        jwks_file: jwks.display().to_string(),
        ..config(&["ES256"])
    })
    .unwrap();
    let key2 = EncodingKey::from_ec_pem(&std::fs::read(&p2).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("two".into());
    let token = jsonwebtoken::encode(&header, &claims("k"), &key2).unwrap();
    assert_eq!(verifier.verify(&token).unwrap().agent.as_str(), "k");
    header.kid = Some("one".into());
    let wrong_kid = jsonwebtoken::encode(&header, &claims("k"), &key2).unwrap();
    assert_eq!(
        verifier.verify(&wrong_kid).unwrap_err(),
        AuthFailure::BadSignature
    );
    header.kid = Some("three".into());
    let unknown = jsonwebtoken::encode(&header, &claims("k"), &key2).unwrap();
    assert_eq!(
        verifier.verify(&unknown).unwrap_err(),
        AuthFailure::UnknownKey
    );
}

fn jwt_config(extra: &str) -> String {
    format!(
        "[auth]\nmode = \"jwt\"\n[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\nissuer = \"agentwall\"\n{extra}"
    )
}

/// Mints a token with the `agentwall token` command, as a user would.
fn mint_cli(config: &Path, sub: &str, extra: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentwall"))
        .args(["token", "--config"])
        .arg(config)
        .args(["--sub", sub, "--ttl", "10m"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn proxy_requires_a_valid_token_and_never_forwards_it() {
    let up = Upstream::start().await;
    let policy = r#"
[[rules]]
id = "loopback"
effect = "allow"
hosts = ["127.0.0.1"]
paths = ["/open/**"]
[[rules]]
id = "research-only"
effect = "allow"
hosts = ["127.0.0.1"]
paths = ["/team/**"]
claims = { team = "research" }
"#;
    let routes = format!(
        "[[routes]]\nprefix = \"/svc/\"\nupstream = \"http://127.0.0.1:{}\"\nheaders = {{ Authorization = \"Bearer upstream-key\" }}\n",
        up.addr.port()
    );
    let aw = Agentwall::start(
        &[("p.toml", policy)],
        &format!("{}{routes}", jwt_config("")),
    )
    .await;
    let token = mint_cli(&aw.config_path(), "agent-7", &["--claim", "team=research"]);
    let p = up.addr.port();
    let get = |target: String, headers: String| {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\n{headers}Connection: close\r\n\r\n",
            target
                .split("://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or("proxy")
        );
        let proxy = aw.proxy;
        async move { raw(proxy, req.as_bytes()).await }
    };

    // Forward proxy: no token → 407 with a challenge, nothing upstream.
    let reply = get(format!("http://127.0.0.1:{p}/open/x"), String::new()).await;
    assert_eq!(reply.status, 407);
    assert_eq!(reply.header("proxy-authenticate"), Some("Bearer"));
    assert_eq!(reply.json()["error"], "unauthenticated");
    // X-Agent-Id alone proves nothing.
    let reply = get(
        format!("http://127.0.0.1:{p}/open/x"),
        "X-Agent-Id: admin\r\n".into(),
    )
    .await;
    assert_eq!(reply.status, 407);
    assert_eq!(up.connection_count(), 0);

    // A valid token: forwarded, the agent is the token's subject, and neither the token nor a
    // spoofed X-Agent-Id reaches the upstream.
    let auth = format!("Proxy-Authorization: Bearer {token}\r\nX-Agent-Id: admin\r\n");
    let reply = get(format!("http://127.0.0.1:{p}/open/x"), auth.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last();
    assert_eq!(seen.header("proxy-authorization"), None);
    assert_eq!(seen.header("x-agent-id"), None);
    let record = aw.record_of(reply.header("x-request-id").unwrap()).await;
    assert_eq!(record["agent"], "agent-7");

    // Claims reach policies.
    assert_eq!(
        get(format!("http://127.0.0.1:{p}/team/x"), auth.clone())
            .await
            .status,
        200
    );
    let ops = mint_cli(&aw.config_path(), "agent-8", &["--claim", "team=ops"]);
    let reply = get(
        format!("http://127.0.0.1:{p}/team/x"),
        format!("Proxy-Authorization: Bearer {ops}\r\n"),
    )
    .await;
    assert_eq!(reply.status, 403);

    // Routes: 401 with WWW-Authenticate; Authorization or X-Agentwall-Token accepted; the
    // agent's token is replaced by the route's credential upstream.
    let reply = get("/svc/open/r".into(), String::new()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let reply = get(
        "/svc/open/r".into(),
        format!("Authorization: Bearer {token}\r\n"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        up.last().header("authorization"),
        Some("Bearer upstream-key")
    );
    let reply = get(
        "/svc/open/r".into(),
        format!("X-Agentwall-Token: {token}\r\n"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().header("x-agentwall-token"), None);

    // Failures are counted by reason, and the token never appears in the audit log.
    let expired = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &json!({ "sub": "agent-7", "iss": "agentwall", "exp": now() - 100 }),
    );
    let reply = get(
        format!("http://127.0.0.1:{p}/open/x"),
        format!("Proxy-Authorization: Bearer {expired}\r\n"),
    )
    .await;
    assert_eq!(reply.status, 407);
    assert_eq!(reply.json()["reason"], "the token has expired");
    let record = aw.record_of(reply.header("x-request-id").unwrap()).await;
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["status"], 407);
    let logs = aw.admin_get("/v1/logs?limit=1000", None).await.text();
    for secret in [&token, &ops, &expired] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(signature),
            "a token leaked into the audit log"
        );
    }
    assert!(
        !aw.log().contains(token.rsplit('.').next().unwrap()),
        "a token leaked into the logs"
    );
    let metrics = aw.admin_get("/metrics", None).await.text();
    assert!(
        metrics.contains("agentwall_auth_failures_total{reason=\"expired\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentwall_auth_failures_total{reason=\"missing\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_changed_jwks_file_is_reloaded_and_a_broken_one_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let oct = |kid: &str, secret: &[u8]| json!({ "kty": "oct", "kid": kid, "alg": "HS256", "k": b64(secret) });
    let jwks = dir.path().join("keys.json");
    let old_secret = b"old-secret-old-secret-old-secret";
    let new_secret = b"new-secret-new-secret-new-secret";
    std::fs::write(
        &jwks,
        json!({ "keys": [oct("old", old_secret)] }).to_string(),
    )
    .unwrap();
    let verifier = JwtVerifier::new(&JwtConfig {
        jwks_file: jwks.display().to_string(),
        ..config(&["HS256"])
    })
    .unwrap();
    verifier.watch().unwrap();
    let token = |kid: &str, secret: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            &claims("rotating"),
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let old = token("old", old_secret);
    let new = token("new", new_secret);
    assert!(verifier.verify(&old).is_ok());
    assert_eq!(verifier.verify(&new).unwrap_err(), AuthFailure::UnknownKey);

    // Rotation: the new key is added (old one kept), then the old one removed.
    write_atomically(
        &jwks,
        &json!({ "keys": [oct("old", old_secret), oct("new", new_secret)] }).to_string(),
    );
    let added = eventually(std::time::Duration::from_secs(3), || async {
        verifier.verify(&new).is_ok()
    })
    .await;
    assert!(added, "the new key was not picked up");
    write_atomically(&jwks, "{ not json");
    write_atomically(
        &jwks,
        &json!({ "keys": [oct("new", new_secret)] }).to_string(),
    );
    let fresh_old = token("old", old_secret);
    let removed = eventually(std::time::Duration::from_secs(3), || async {
        verifier.verify(&fresh_old).err() == Some(AuthFailure::UnknownKey)
    })
    .await;
    assert!(removed, "the old key was not dropped");
    assert!(verifier.verify(&new).is_ok());
}
