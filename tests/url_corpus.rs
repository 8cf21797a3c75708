//! Host and path canonicalization against the WHATWG URL test data: wherever agentwall accepts
//! an absolute http(s) URL, its host, port, path and query agree with the standard's; every
//! input the standard rejects, agentwall rejects too.

use agentwall::policy::normalize::{absolute_form, normalize_path};

#[derive(serde::Deserialize)]
struct Case {
    input: String,
    #[serde(default)]
    failure: bool,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    pathname: String,
    #[serde(default)]
    search: String,
    #[serde(default)]
    protocol: String,
}

fn cases() -> Vec<Case> {
    let text = include_str!("data/urltestdata.json");
    let raw: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
    raw.into_iter()
        .filter(|v| v.is_object())
        .map(|v| serde_json::from_value(v).unwrap())
        .filter(|c: &Case| {
            let lower = c.input.to_ascii_lowercase();
            // Absolute http(s) URLs that can stand in an HTTP request line.
            (lower.starts_with("http://") || lower.starts_with("https://"))
                && !c.input.bytes().any(|b| b <= b' ' || b == 0x7f)
        })
        .collect()
}

#[test]
fn agrees_with_whatwg_wherever_it_accepts() {
    let cases = cases();
    assert!(cases.len() > 150, "only {} cases", cases.len());
    let (mut accepted, mut stricter, mut failures_rejected) = (0, 0, 0);
    let mut disagreements = Vec::new();
    for case in &cases {
        let ours = absolute_form(case.input.as_bytes(), None);
        if case.failure {
            match ours {
                Err(_) => failures_rejected += 1,
                Ok(t) => disagreements.push(format!(
                    "{:?}: WHATWG rejects it, we accepted {t}",
                    case.input
                )),
            }
            continue;
        }
        let Ok(t) = ours else {
            stricter += 1;
            continue;
        };
        accepted += 1;
        let want_host = case.hostname.trim_start_matches('[').trim_end_matches(']');
        let default_port = if case.protocol == "https:" { 443 } else { 80 };
        let want_port = case.port.parse().unwrap_or(default_port);
        // agentwall also decodes escaped unreserved characters; compare in that form.
        let want_path = normalize_path(case.pathname.as_bytes())
            .map(|(p, _)| p)
            .unwrap_or_else(|e| format!("<{e}>"));
        // The query is forwarded as sent; WHATWG escapes a few characters (e.g. "'") that
        // agentwall passes through, so compare decoded.
        let want_query = case
            .search
            .strip_prefix('?')
            .filter(|q| !q.is_empty())
            .map(decode);
        let got_query = t.query.as_deref().filter(|q| !q.is_empty()).map(decode);
        if t.host != want_host
            || t.port != want_port
            || t.path != want_path
            || got_query != want_query
        {
            disagreements.push(format!(
                "{:?}: want {want_host} {want_port} {want_path} {want_query:?}, got {} {} {} {got_query:?}",
                case.input, t.host, t.port, t.path
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    // Keep the comparison meaningful: most valid inputs must be accepted, not refused.
    assert!(
        accepted > 40,
        "accepted {accepted}, refused {stricter} valid inputs"
    );
    assert!(failures_rejected > 50);
    eprintln!("WHATWG corpus: {accepted} accepted and equal, {stricter} valid inputs refused as ambiguous, {failures_rejected} invalid inputs rejected");
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|&b| (b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
