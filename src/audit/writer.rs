//! The request side (`AuditSink`, never touches disk) and the writer thread that batches
//! records into the store, assigning ids and chaining hashes.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

use super::record::AuditRecord;
use super::store::{AuditError, AuditStore};
use crate::config::OnFull;
use crate::metrics::Metrics;

pub(crate) enum Message {
    Record(Box<AuditRecord>),
    Shutdown,
}

/// How long a request waits for queue room with `on_full = "block"`.
const BLOCK_WAIT: Duration = Duration::from_secs(2);
/// How long the writer lets records gather after a write; bounds how soon a record is
/// queryable, and makes the writer wake ~200 times a second under load, not per request.
const LINGER: Duration = Duration::from_millis(5);
/// Records taken off the queue per write.
const MAX_BATCH: usize = 1024;
/// Target size of one chunk before compression (JSON compresses ~10×, and sled stores values
/// over ~128 KiB as separate files).
const CHUNK_BYTES: usize = 128 * 1024;

/// The cheap, cloneable handle the request path records through.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Message>,
    on_full: OnFull,
    metrics: Arc<Metrics>,
}

/// Room in the audit queue, reserved when a request arrives so its record can always be
/// written.
pub struct AuditSlot(mpsc::OwnedPermit<Message>);

/// The audit queue stayed full for the whole wait (`on_full = "block"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit queue is full")]
pub struct AuditFull;

impl AuditSink {
    /// Reserves room for one record before the request is handled. With `block`, waits up to
    /// two seconds and then fails, so the request is refused (503) rather than its record
    /// lost. With `drop`, never waits: `None` when full, and the record will be counted as
    /// dropped.
    pub async fn reserve(&self) -> Result<Option<AuditSlot>, AuditFull> {
        match self.tx.clone().try_reserve_owned() {
            Ok(permit) => Ok(Some(AuditSlot(permit))),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditFull),
            Err(mpsc::error::TrySendError::Full(tx)) => match self.on_full {
                OnFull::Drop => Ok(None),
                OnFull::Block => match tokio::time::timeout(BLOCK_WAIT, tx.reserve_owned()).await {
                    Ok(Ok(permit)) => Ok(Some(AuditSlot(permit))),
                    Ok(Err(_)) | Err(_) => Err(AuditFull),
                },
            },
        }
    }

    /// Queues a record: into its reserved slot, or (without one) if there is room now.
    pub fn record(&self, slot: Option<AuditSlot>, record: AuditRecord) {
        let message = Message::Record(Box::new(record));
        let sent = match slot {
            Some(AuditSlot(permit)) => {
                permit.send(message);
                true
            }
            None => self.tx.try_send(message).is_ok(),
        };
        if !sent {
            self.metrics.audit_dropped.inc();
            tracing::warn!("audit queue full; record dropped");
        }
    }

    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// The writer thread; `shutdown` drains the queue and flushes the store.
pub struct AuditWriter {
    tx: mpsc::Sender<Message>,
    thread: JoinHandle<()>,
}

impl AuditWriter {
    pub fn start(
        store: Arc<AuditStore>,
        queue: usize,
        on_full: OnFull,
        metrics: Arc<Metrics>,
    ) -> Result<(AuditWriter, AuditSink), AuditError> {
        let (tx, rx) = mpsc::channel(queue);
        let mut chain = Chain::resume(&store)?;
        let writer_metrics = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || chain.run(rx, &store, &writer_metrics))
            .map_err(|e| AuditError::Corrupt {
                id: 0,
                message: format!("cannot start the writer thread: {e}"),
            })?;
        let sink = AuditSink {
            tx: tx.clone(),
            on_full,
            metrics,
        };
        Ok((AuditWriter { tx, thread }, sink))
    }

    /// Writes everything queued, flushes the store to disk and stops the thread.
    pub fn shutdown(self) {
        let _ = self.tx.blocking_send(Message::Shutdown);
        if self.thread.join().is_err() {
            tracing::error!("audit writer thread panicked");
        }
    }
}

/// The writer's state: where the id sequence and the hash chain continue, and the buffer
/// chunks are assembled in (reused, so steady writing allocates nothing per chunk).
pub struct Chain {
    next_id: u64,
    prev_hash: String,
    chunk: Vec<u8>,
}

impl Chain {
    /// Continues after the newest stored record.
    pub fn resume(store: &AuditStore) -> Result<Chain, AuditError> {
        let (next_id, prev_hash) = store
            .last()?
            .map_or((1, String::new()), |r| (r.id + 1, r.hash));
        Ok(Chain {
            next_id,
            prev_hash,
            chunk: Vec::with_capacity(CHUNK_BYTES + 4096),
        })
    }

    fn run(&mut self, mut rx: mpsc::Receiver<Message>, store: &AuditStore, metrics: &Metrics) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut stopping = false;
        while !stopping {
            match rx.blocking_recv() {
                None => stopping = true,
                Some(Message::Shutdown) => stopping = true,
                Some(Message::Record(r)) => batch.push(*r),
            }
            // Take what else is already queued, in batches.
            loop {
                match rx.try_recv() {
                    Ok(Message::Record(r)) => batch.push(*r),
                    Ok(Message::Shutdown) => stopping = true,
                    Err(_) => break,
                }
                if batch.len() >= MAX_BATCH {
                    self.write_logged(&mut batch, store, metrics);
                }
            }
            self.write_logged(&mut batch, store, metrics);
            if !stopping {
                // Group commit: let records gather instead of waking once per request.
                std::thread::sleep(LINGER);
            }
        }
        if let Err(e) = store.flush() {
            metrics.audit_write_errors.inc();
            tracing::error!(error = %e, "audit flush failed");
        }
    }

    fn write_logged(
        &mut self,
        batch: &mut Vec<AuditRecord>,
        store: &AuditStore,
        metrics: &Metrics,
    ) {
        let total = batch.len() as u64;
        match self.write(batch, store) {
            Ok(()) => metrics.audit_records.inc_by(total),
            Err((written, e)) => {
                metrics.audit_records.inc_by(written as u64);
                metrics.audit_write_errors.inc();
                tracing::error!(error = %e, lost = total - written as u64, "audit records lost");
            }
        }
    }

    /// Seals `batch` into the chain and stores it in chunks of about `CHUNK_BYTES`. Drains
    /// `batch`.
    /// On a store failure (after retries) the chain is rewound to what is stored, the rest of
    /// the batch is dropped, and the number of records written is returned with the error.
    pub fn write(
        &mut self,
        batch: &mut Vec<AuditRecord>,
        store: &AuditStore,
    ) -> Result<(), (usize, AuditError)> {
        let mut written = 0;
        let mut chunk_start = (self.next_id, self.prev_hash.clone());
        let mut in_chunk = 0;
        let last = batch.len().saturating_sub(1);
        for (i, r) in batch.iter_mut().enumerate() {
            let prev = std::mem::take(&mut self.prev_hash);
            self.chunk.extend_from_slice(&r.seal(self.next_id, prev));
            self.chunk.push(b'\n');
            self.prev_hash.clone_from(&r.hash);
            self.next_id += 1;
            in_chunk += 1;
            if self.chunk.len() >= CHUNK_BYTES || i == last {
                let result = append_with_retry(store, chunk_start.0, &self.chunk);
                self.chunk.clear();
                if let Err(e) = result {
                    (self.next_id, self.prev_hash) = chunk_start;
                    batch.clear();
                    return Err((written, e));
                }
                written += in_chunk;
                in_chunk = 0;
                chunk_start = (self.next_id, self.prev_hash.clone());
            }
        }
        batch.clear();
        Ok(())
    }
}

fn append_with_retry(store: &AuditStore, first_id: u64, chunk: &[u8]) -> Result<(), AuditError> {
    let mut attempt = 0;
    loop {
        match store.append(first_id, chunk) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "audit chunk write failed; retrying");
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
            Err(e) => return Err(e),
        }
    }
}
