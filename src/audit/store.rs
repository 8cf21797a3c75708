//! The sled-backed audit store: records keyed by sequence number (big-endian, so iteration
//! order is write order), queried newest first.

use std::path::Path;
use std::time::Duration;

use super::record::{AuditDecision, AuditRecord};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("audit store: {0}")]
    Sled(#[from] sled::Error),
    #[error("audit store: corrupt record {id}: {message}")]
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
            Some((key, value)) => decode(&key, &value).map(Some),
            None => Ok(None),
        }
    }

    pub fn append(&self, batch: &[AuditRecord]) -> Result<(), AuditError> {
        let mut b = sled::Batch::default();
        for r in batch {
            let value = serde_json::to_vec(r).map_err(|e| AuditError::Corrupt {
                id: r.id,
                message: e.to_string(),
            })?;
            b.insert(&r.id.to_be_bytes(), value);
        }
        self.records.apply_batch(b)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), AuditError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Newest first; returns the page and the cursor for the next one.
    pub fn query(&self, q: &LogQuery) -> Result<(Vec<AuditRecord>, Option<u64>), AuditError> {
        let limit = q.limit.clamp(1, 1000);
        let iter = match q.cursor {
            Some(c) => self.records.range(..c.to_be_bytes()),
            None => self.records.range::<&[u8], _>(..),
        };
        let mut out = Vec::with_capacity(limit.min(128));
        for item in iter.rev() {
            let (key, value) = item?;
            let record = decode(&key, &value)?;
            if q.since
                .as_ref()
                .is_some_and(|s| record.ts.as_str() < s.as_str())
            {
                break;
            }
            if q.matches(&record) {
                if out.len() == limit {
                    let next = out.last().map(|r: &AuditRecord| r.id);
                    return Ok((out, next));
                }
                out.push(record);
            }
        }
        Ok((out, None))
    }

    /// Every record in write order (oldest first).
    pub fn iter(&self) -> impl Iterator<Item = Result<AuditRecord, AuditError>> + '_ {
        self.records.iter().map(|item| {
            let (key, value) = item?;
            decode(&key, &value)
        })
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<AuditRecord, AuditError> {
    let id = key.try_into().map(u64::from_be_bytes).unwrap_or(0);
    serde_json::from_slice(value).map_err(|e| AuditError::Corrupt {
        id,
        message: e.to_string(),
    })
}
