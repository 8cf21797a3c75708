//! Hot-path benches: policy evaluation at several rule counts, target normalization, the audit
//! writer's per-record cost, and JWT verification (cached and fresh).

use std::hint::black_box;

use agentwall::audit::{AuditDecision, AuditRecord, AuditStore, Chain, ProxyMode};
use agentwall::config::DefaultEffect;
use agentwall::policy::normalize::{absolute_form, Scheme};
use agentwall::policy::{PolicySet, RequestFacts};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// `n` rules spread over policies of 10 rules, each on its own host, plus a catch-all deny.
fn policy_set(n: usize) -> PolicySet {
    let mut sources = Vec::new();
    for p in 0..n.div_ceil(10) {
        let mut text = format!("name = \"p{p}\"\nagents = [\"agent-*\"]\n");
        for r in 0..10.min(n - p * 10) {
            let i = p * 10 + r;
            text.push_str(&format!(
                "[[rules]]\nid = \"r{r}\"\neffect = \"{}\"\nhosts = [\"api{i}.example.com\", \"*.svc{i}.example.net\"]\n\
                 methods = [\"GET\", \"POST\"]\npaths = [\"/v1/items/**\", \"/v1/users/*/profile\"]\n",
                if i % 7 == 0 { "deny" } else { "allow" }
            ));
        }
        sources.push((format!("p{p}.toml"), text));
    }
    PolicySet::compile(&sources, DefaultEffect::Deny).expect("bench policies compile")
}

fn bench_eval(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_eval");
    for n in [10, 100, 1000, 10_000] {
        let set = policy_set(n);
        let host = format!("api{}.example.com", n - 2);
        let facts = RequestFacts::new(
            "agent-research-1",
            "GET",
            Scheme::Https,
            &host,
            443,
            "/v1/items/42/details",
        );
        group.bench_with_input(BenchmarkId::new("rules", n), &facts, |b, f| {
            b.iter(|| black_box(set.evaluate(black_box(f))))
        });
    }
    group.finish();
}

fn bench_normalize(c: &mut Criterion) {
    c.bench_function("normalize/absolute_form", |b| {
        b.iter(|| {
            black_box(absolute_form(
                black_box(b"http://API.Example.com:8080/v1/./items//42/../43?q=%41b&x=1"),
                Some(b"API.Example.com:8080"),
            ))
        })
    });
}

fn record() -> AuditRecord {
    AuditRecord {
        id: 0,
        ts: "2026-11-22T03:33:24.123456Z".into(),
        request_id: "db56d7ed000000000001".into(),
        agent: "agent-research-1".into(),
        client: "127.0.0.1:40000".into(),
        mode: ProxyMode::Forward,
        method: "GET".into(),
        scheme: "https".into(),
        host: "api.github.com".into(),
        port: 443,
        path: "/repos/a/b/issues".into(),
        status: 200,
        decision: AuditDecision::Allow,
        policy: Some("github-readonly".into()),
        rule: Some("read".into()),
        reason: "repository reads".into(),
        shadow: None,
        detectors: vec![],
        bytes_in: 0,
        bytes_out: 5120,
        duration_ms: 12.5,
        upstream_ms: Some(11.0),
        policy_version: "sha256:1785b2b8d75c8db96ee27093147bf9cd87fcf089922d0ae4da1c800d932f26f3"
            .into(),
        prev_hash: "22a211281ebdd4229055df5c461fd4ee59549405b7081b18d88cb747fc43f2f7".into(),
        hash: String::new(),
    }
}

/// The writer's amortized cost per record: the writer's own `Chain::write` sealing (serialize
/// + hash chain) and storing a 1,024-record batch in sled chunks, as under load.
fn bench_audit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AuditStore::open(dir.path(), std::time::Duration::from_millis(100)).expect("store");
    let mut chain = Chain::resume(&store).expect("chain");
    let template: Vec<AuditRecord> = (0..1024).map(|_| record()).collect();
    let mut group = c.benchmark_group("audit");
    group.throughput(criterion::Throughput::Elements(1024));
    group.bench_function("write_batch_1024", |b| {
        b.iter_batched(
            || template.clone(),
            |mut batch| chain.write(&mut batch, &store).expect("write"),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Per-record CPU on the writer thread before the store: serialize + sha256 (hash chain).
fn bench_seal(c: &mut Criterion) {
    let mut r = record();
    c.bench_function("audit/seal_one", |b| {
        b.iter(|| black_box(r.seal(1, String::new())))
    });
}

/// Identity per request: a token seen before (cache hit) and a fresh HS256 token.
fn bench_identity(c: &mut Criterion) {
    use agentwall::config::JwtConfig;
    use agentwall::identity::JwtVerifier;
    let secret = "bench-secret-that-is-at-least-32-bytes-long";
    let verifier = JwtVerifier::new(&JwtConfig {
        algorithms: vec!["HS256".into()],
        secret: secret.into(),
        cache_size: 1_000_000,
        ..JwtConfig::default()
    })
    .expect("verifier");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 3600)
        .unwrap_or(u64::MAX / 2);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let token = |n: u64| {
        let claims =
            serde_json::json!({ "sub": format!("agent-{n}"), "exp": exp, "team": "research" });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &key,
        )
        .expect("token")
    };
    let cached = token(0);
    verifier.verify(&cached).expect("valid");
    c.bench_function("identity/jwt_cached", |b| {
        b.iter(|| black_box(verifier.verify(black_box(&cached))))
    });
    // A one-entry cache: every distinct token is a miss, verified in full and cached.
    let uncached = JwtVerifier::new(&JwtConfig {
        algorithms: vec!["HS256".into()],
        secret: secret.into(),
        cache_size: 1,
        ..JwtConfig::default()
    })
    .expect("verifier");
    let fresh: Vec<String> = (1..=100_000).map(token).collect();
    let mut i = 0;
    c.bench_function("identity/jwt_hs256_uncached", |b| {
        b.iter(|| {
            i = (i + 1) % fresh.len();
            black_box(uncached.verify(&fresh[i]))
        })
    });
}

criterion_group!(
    benches,
    bench_eval,
    bench_normalize,
    bench_audit,
    bench_seal,
    bench_identity
);
criterion_main!(benches);
