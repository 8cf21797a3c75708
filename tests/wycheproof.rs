//! The signature layer against the Wycheproof JWS vectors: with the group's key and the
//! algorithm the vector's header names pinned, every `invalid` vector is rejected and every
//! `valid` one verifies, except where agentwall is deliberately stricter (unsupported ES512,
//! a JWK whose `alg` differs from the token's) or the corpus contradicts itself (an
//! "invalid" token byte-identical to a "valid" one; a "valid" token that is not base64url).

use agentwall::config::JwtConfig;
use agentwall::identity::JwtVerifier;
use base64::Engine;

#[derive(serde::Deserialize)]
struct Suite {
    #[serde(rename = "testGroups")]
    groups: Vec<Group>,
}

#[derive(serde::Deserialize)]
struct Group {
    comment: Option<String>,
    public: Option<serde_json::Value>,
    private: Option<serde_json::Value>,
    tests: Vec<Vector>,
}

#[derive(serde::Deserialize)]
struct Vector {
    #[serde(rename = "tcId")]
    id: u32,
    comment: String,
    jws: String,
    result: String,
}

fn header_alg(jws: &str) -> Option<String> {
    let header = jws.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

/// A verifier for one key (as a one-key JWK set) with `alg` pinned.
fn verifier(
    dir: &std::path::Path,
    key: &serde_json::Value,
    alg: &str,
) -> Result<JwtVerifier, String> {
    let path = dir.join("jwks.json");
    std::fs::write(&path, serde_json::json!({ "keys": [key] }).to_string()).unwrap();
    JwtVerifier::new(&JwtConfig {
        algorithms: vec![alg.to_string()],
        jwks_file: path.display().to_string(),
        ..JwtConfig::default()
    })
}

#[test]
fn every_invalid_vector_is_rejected_and_valid_ones_verify() {
    let suite: Suite =
        serde_json::from_str(include_str!("data/jwt/json_web_signature_test.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let valid_strings: std::collections::HashSet<&str> = suite
        .groups
        .iter()
        .flat_map(|g| g.tests.iter())
        .filter(|v| v.result == "valid")
        .map(|v| v.jws.as_str())
        .collect();
    let base64url = |jws: &str| {
        jws.split('.').all(|part| {
            part.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    let (mut rejected, mut accepted, mut skipped, mut contradictions) = (0, 0, 0, 0);
    let mut wrong = Vec::new();
    for group in &suite.groups {
        // Public keys verify; an oct (HMAC) key is only in `private`.
        let Some(key) = group.public.as_ref().or(group.private.as_ref()) else {
            continue;
        };
        for v in &group.tests {
            let alg = header_alg(&v.jws)
                .or_else(|| key.get("alg").and_then(|a| a.as_str()).map(str::to_string))
                .unwrap_or_else(|| "RS256".into());
            let outcome = verifier(dir.path(), key, &alg).and_then(|ver| {
                ver.verify_signature(&v.jws)
                    .map_err(|e| e.code().to_string())
            });
            let key_alg = key.get("alg").and_then(|a| a.as_str());
            match (v.result.as_str(), outcome) {
                ("invalid", Ok(_)) if valid_strings.contains(v.jws.as_str()) => contradictions += 1,
                ("valid", Err(_)) if !base64url(&v.jws) => contradictions += 1,
                ("valid", Err(_)) if key_alg.is_some_and(|k| k != alg) => skipped += 1,
                ("invalid", Ok(_)) => wrong.push(format!(
                    "{:?} #{} ({}): invalid vector accepted",
                    group.comment, v.id, v.comment
                )),
                ("invalid", Err(_)) => rejected += 1,
                ("valid", Ok(_)) => accepted += 1,
                ("valid", Err(_)) if alg == "ES512" || alg == "ES521" => skipped += 1,
                ("valid", Err(e)) => wrong.push(format!(
                    "{:?} #{} ({}): valid {alg} vector rejected: {e}",
                    group.comment, v.id, v.comment
                )),
                (other, _) => panic!("unknown result {other}"),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        contradictions <= 4,
        "{contradictions} self-contradicting vectors"
    );
    assert!(rejected >= 350, "only {rejected} invalid vectors seen");
    assert!(accepted >= 40, "only {accepted} valid vectors verified");
    eprintln!(
        "wycheproof: {rejected} invalid rejected, {accepted} valid verified, {skipped} valid refused by design, \
         {contradictions} contradictory vectors"
    );
}
