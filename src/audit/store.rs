//! The sled-backed audit store. Records are stored in chunks: one sled entry per written
//! chunk, keyed by its first record id (big-endian, so key order is write order), its value
//! the records' JSON, one per line, zstd-compressed. Few, small inserts keep the amortized
//! cost per record low; queries walk chunks newest first.

use std::path::Path;
use std::time::Duration;

use super::record::{AuditDecision, AuditRecord};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit store at {path}")]
    Open { path: String, source: sled::Error },
    #[error("audit store: {0}")]
    Sled(#[from] sled::Error),
    #[error("audit store: corrupt chunk {id}: {message}")]
    Corrupt { id: u64, message: String },
}

pub struct AuditStore {
    db: sled::Db,
    records: sled::Tree,
}

/// Filters for `GET /v1/logs`. Times are RFC 3339 strings in the records' own format, so they
/// compare as text.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub agent: Option<String>,
    pub decision: Option<AuditDecision>,
    pub host: Option<String>,
    pub rule: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: usize,
    /// Return records with ids below this one (from a previous page's `next_cursor`).
    pub cursor: Option<u64>,
}

impl LogQuery {
    fn matches(&self, r: &AuditRecord) -> bool {
        self.agent.as_ref().is_none_or(|a| *a == r.agent)
            && self.decision.is_none_or(|d| d == r.decision)
            && self.host.as_ref().is_none_or(|h| *h == r.host)
            && self.rule.as_ref().is_none_or(|rule| {
                r.policy
                    .as_ref()
                    .zip(r.rule.as_ref())
                    .is_some_and(|(p, id)| {
                        rule.split_once('/')
                            .map_or(rule == id, |(rp, rid)| rp == p && rid == id)
                    })
            })
            && self
                .until
                .as_ref()
                .is_none_or(|u| r.ts.as_str() <= u.as_str())
    }
}

impl AuditStore {
    pub fn open(dir: &Path, flush_every: Duration) -> Result<AuditStore, AuditError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(flush_every.as_millis().max(1) as u64))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| AuditError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        let records = db.open_tree("records")?;
        Ok(AuditStore { db, records })
    }

    /// The newest record, from which the writer continues the id sequence and hash chain.
    pub fn last(&self) -> Result<Option<AuditRecord>, AuditError> {
        match self.records.last()? {
            Some((key, value)) => Ok(decode_chunk(&key, &value)?.pop()),
            None => Ok(None),
        }
    }

    /// Appends one chunk: `json_lines` holds the records starting at `first_id`, each
    /// followed by '\n'.
    pub fn append(&self, first_id: u64, json_lines: &[u8]) -> Result<(), AuditError> {
        let compressed = zstd::bulk::compress(json_lines, 1).map_err(|e| AuditError::Corrupt {
            id: first_id,
            message: format!("compressing: {e}"),
        })?;
        self.records.insert(first_id.to_be_bytes(), compressed)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), AuditError> {
        self.db.flush()?;
        Ok(())
    }

    /// Newest first; returns the page and the cursor for the next one.
    pub fn query(&self, q: &LogQuery) -> Result<(Vec<AuditRecord>, Option<u64>), AuditError> {
        let limit = q.limit.clamp(1, 1000);
        let below = q.cursor.unwrap_or(u64::MAX);
        let chunks = self.records.range(..=below.saturating_sub(1).to_be_bytes());
        let mut out: Vec<AuditRecord> = Vec::with_capacity(limit.min(128));
        for chunk in chunks.rev() {
            let (key, value) = chunk?;
            for record in decode_chunk(&key, &value)?.into_iter().rev() {
                if record.id >= below {
                    continue;
                }
                if q.since
                    .as_ref()
                    .is_some_and(|s| record.ts.as_str() < s.as_str())
                {
                    return Ok((out, None));
                }
                if q.matches(&record) {
                    if out.len() == limit {
                        let next = out.last().map(|r| r.id);
                        return Ok((out, next));
                    }
                    out.push(record);
                }
            }
        }
        Ok((out, None))
    }

    /// Every record in write order (oldest first).
    pub fn iter(&self) -> impl Iterator<Item = Result<AuditRecord, AuditError>> + '_ {
        self.records.iter().flat_map(|chunk| {
            let records: Vec<Result<AuditRecord, AuditError>> = match chunk
                .map_err(AuditError::from)
                .and_then(|(k, v)| decode_chunk(&k, &v))
            {
                Ok(records) => records.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            records
        })
    }
}

/// The records of one chunk, in order.
fn decode_chunk(key: &[u8], value: &[u8]) -> Result<Vec<AuditRecord>, AuditError> {
    let first = key.try_into().map(u64::from_be_bytes).unwrap_or(0);
    let corrupt = |message: String| AuditError::Corrupt { id: first, message };
    let mut json = Vec::with_capacity(value.len() * 12);
    zstd::stream::copy_decode(value, &mut json)
        .map_err(|e| corrupt(format!("decompressing: {e}")))?;
    json.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(|e| corrupt(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditRecord, ProxyMode};

    fn record(agent: &str, decision: AuditDecision, ts: &str) -> AuditRecord {
        AuditRecord {
            id: 0,
            ts: ts.into(),
            request_id: String::new(),
            agent: agent.into(),
            client: String::new(),
            mode: ProxyMode::Forward,
            method: "GET".into(),
            scheme: "http".into(),
            host: "h".into(),
            port: 80,
            path: "/".into(),
            status: 200,
            decision,
            policy: Some("p".into()),
            rule: Some("r".into()),
            reason: String::new(),
            shadow: None,
            detectors: vec![],
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0.0,
            upstream_ms: None,
            policy_version: String::new(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Writes records 1..=n in chunks of `chunk`, with ts seconds = id.
    fn store_with(n: u64, chunk: u64) -> (tempfile::TempDir, AuditStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(dir.path(), Duration::from_millis(100)).unwrap();
        let mut prev = String::new();
        let mut id = 1;
        while id <= n {
            let first = id;
            let mut buf = Vec::new();
            while id <= n && id < first + chunk {
                let decision = if id % 3 == 0 {
                    AuditDecision::Deny
                } else {
                    AuditDecision::Allow
                };
                let agent = if id % 2 == 0 { "even" } else { "odd" };
                let mut r = record(
                    agent,
                    decision,
                    &format!("2026-11-22T00:00:{id:02}.000000Z"),
                );
                buf.extend_from_slice(&r.seal(id, std::mem::take(&mut prev)));
                buf.push(b'\n');
                prev = r.hash;
                id += 1;
            }
            store.append(first, &buf).unwrap();
        }
        (dir, store)
    }

    fn ids(records: &[AuditRecord]) -> Vec<u64> {
        records.iter().map(|r| r.id).collect()
    }

    #[test]
    fn pages_newest_first_across_chunks() {
        let (_dir, store) = store_with(10, 4);
        let mut q = LogQuery {
            limit: 3,
            ..LogQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let (page, next) = store.query(&q).unwrap();
            seen.extend(ids(&page));
            match next {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, (1..=10).rev().collect::<Vec<_>>());
        assert_eq!(store.last().unwrap().unwrap().id, 10);
        let all: Vec<u64> = store.iter().map(|r| r.unwrap().id).collect();
        assert_eq!(all, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn filters_combine() {
        let (_dir, store) = store_with(12, 5);
        let q = LogQuery {
            limit: 100,
            decision: Some(AuditDecision::Deny),
            agent: Some("even".into()),
            ..LogQuery::default()
        };
        assert_eq!(ids(&store.query(&q).unwrap().0), vec![12, 6]);
        let q = LogQuery {
            limit: 100,
            since: Some("2026-11-22T00:00:09.000000Z".into()),
            until: Some("2026-11-22T00:00:11.000000Z".into()),
            ..LogQuery::default()
        };
        assert_eq!(ids(&store.query(&q).unwrap().0), vec![11, 10, 9]);
        let q = LogQuery {
            limit: 100,
            rule: Some("p/r".into()),
            ..LogQuery::default()
        };
        assert_eq!(store.query(&q).unwrap().0.len(), 12);
        let q = LogQuery {
            limit: 100,
            rule: Some("q/r".into()),
            ..LogQuery::default()
        };
        assert!(store.query(&q).unwrap().0.is_empty());
    }

    #[test]
    fn chain_links_every_record() {
        let (_dir, store) = store_with(9, 4);
        let records: Vec<AuditRecord> = store.iter().map(|r| r.unwrap()).collect();
        for pair in records.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        for r in &records {
            assert_eq!(r.hash, r.compute_hash());
        }
    }
}
