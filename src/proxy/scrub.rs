//! Response scrubbing: literal occurrences of a route's injected credentials are replaced by
//! `[REDACTED]` in response headers and bodies, streamed with a carry of at most the longest
//! secret's length, so matches split across chunks are caught and memory stays bounded.

use std::sync::Arc;

use pingora::http::ResponseHeader;

pub const REDACTED: &[u8] = b"[REDACTED]";

/// The secrets to scrub, longest first (so a secret containing another is replaced whole).
#[derive(Clone, Default)]
pub struct Secrets(Arc<[Vec<u8>]>);

impl Secrets {
    /// Each injected header value, and for `Scheme token` values the token alone (upstreams
    /// echo either). Values under 8 bytes are not treated as secrets.
    pub fn from_values<'a>(values: impl Iterator<Item = &'a [u8]>) -> Secrets {
        let mut secrets: Vec<Vec<u8>> = Vec::new();
        for value in values {
            let token = value.rsplit(|&b| b == b' ').next().unwrap_or(value);
            for candidate in [value, token] {
                if candidate.len() >= 8 && !secrets.iter().any(|s| s == candidate) {
                    secrets.push(candidate.to_vec());
                }
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Secrets(secrets.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn longest(&self) -> usize {
        self.0.first().map_or(0, Vec::len)
    }

    /// The earliest occurrence of any secret in `data`, as (start, length).
    fn find(&self, data: &[u8]) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for secret in self.0.iter() {
            let limit = best.map_or(data.len(), |(start, _)| {
                (start + secret.len()).min(data.len())
            });
            if let Some(pos) = data[..limit]
                .windows(secret.len())
                .position(|w| w == secret.as_slice())
            {
                if best.is_none_or(|(start, _)| pos < start) {
                    best = Some((pos, secret.len()));
                }
            }
        }
        best
    }

    /// Replaces every secret in a complete value (a header).
    pub fn scrub_all(&self, data: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = data;
        let mut changed = false;
        while let Some((start, len)) = self.find(rest) {
            out.extend_from_slice(&rest[..start]);
            out.extend_from_slice(REDACTED);
            rest = &rest[start + len..];
            changed = true;
        }
        out.extend_from_slice(rest);
        changed.then_some(out)
    }
}

/// Why a response cannot be passed on scrubbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScrubError {
    #[error(
        "the upstream sent a compressed body, which cannot be scrubbed of injected credentials"
    )]
    Compressed,
    #[error("the upstream sent a response header that cannot be rewritten")]
    Header,
}

/// Replaces injected secrets in response headers. The body length may change, so the length
/// is dropped (the response is re-framed); a compressed body could hide a secret, so it is
/// refused rather than passed on.
pub fn scrub_headers(response: &mut ResponseHeader, secrets: &Secrets) -> Result<(), ScrubError> {
    let encoded = response
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(ScrubError::Compressed);
    }
    response.remove_header(&http::header::CONTENT_LENGTH);
    let touched: Vec<http::HeaderName> = response
        .headers
        .iter()
        .filter(|(_, value)| secrets.scrub_all(value.as_bytes()).is_some())
        .map(|(name, _)| name.clone())
        .collect();
    for name in touched {
        // Rewrite every value of the header, in order, so repeated headers survive.
        let values: Vec<Vec<u8>> = response
            .headers
            .get_all(&name)
            .iter()
            .map(|v| {
                secrets
                    .scrub_all(v.as_bytes())
                    .unwrap_or_else(|| v.as_bytes().to_vec())
            })
            .collect();
        response.remove_header(&name);
        for value in values {
            // Scrubbing only replaces bytes of a valid value with ASCII, so this holds.
            let value = http::HeaderValue::from_bytes(&value).map_err(|_| ScrubError::Header)?;
            response
                .append_header(name.clone(), value)
                .map_err(|_| ScrubError::Header)?;
        }
    }
    Ok(())
}

/// Streaming scrubber for one response body.
pub struct Scrubber {
    secrets: Secrets,
    carry: Vec<u8>,
}

impl Scrubber {
    pub fn new(secrets: Secrets) -> Scrubber {
        Scrubber {
            secrets,
            carry: Vec::new(),
        }
    }

    /// Takes the next chunk and returns what can be sent now; at `end`, everything left.
    pub fn push(&mut self, chunk: &[u8], end: bool) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(data.len());
        let mut at = 0;
        while let Some((start, len)) = self.secrets.find(&data[at..]) {
            out.extend_from_slice(&data[at..at + start]);
            out.extend_from_slice(REDACTED);
            at += start + len;
        }
        let rest = &data[at..];
        // A secret may begin in the last (longest - 1) bytes and end in the next chunk.
        let keep = if end {
            0
        } else {
            rest.len().min(self.secrets.longest().saturating_sub(1))
        };
        out.extend_from_slice(&rest[..rest.len() - keep]);
        self.carry = rest[rest.len() - keep..].to_vec();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        let values: [&[u8]; 2] = [b"Bearer ghp_SECRETSECRET", b"sk-other-key-123"];
        Secrets::from_values(values.into_iter())
    }

    #[test]
    fn whole_values_and_bare_tokens_are_scrubbed() {
        let s = secrets();
        assert_eq!(
            s.scrub_all(b"auth=Bearer ghp_SECRETSECRET; again ghp_SECRETSECRET")
                .unwrap(),
            b"auth=[REDACTED]; again [REDACTED]"
        );
        assert!(s.scrub_all(b"nothing here").is_none());
    }

    #[test]
    fn matches_split_across_any_chunk_boundary_are_caught() {
        let body =
            b"prefix ghp_SECRETSECRET middle sk-other-key-123 suffix Bearer ghp_SECRETSECRET end";
        let want = b"prefix [REDACTED] middle [REDACTED] suffix [REDACTED] end".to_vec();
        for size in 1..body.len() {
            let mut scrubber = Scrubber::new(secrets());
            let mut out = Vec::new();
            let chunks: Vec<&[u8]> = body.chunks(size).collect();
            for chunk in &chunks {
                out.extend(scrubber.push(chunk, false));
            }
            out.extend(scrubber.push(b"", true));
            assert_eq!(out, want, "chunk size {size}");
        }
    }
}
