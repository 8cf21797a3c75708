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

enum Message {
    Record(Box<AuditRecord>),
    Shutdown,
}

/// How long a request waits for queue room with `on_full = "block"`.
const BLOCK_WAIT: Duration = Duration::from_secs(2);
/// Records per stored chunk.
const MAX_BATCH: usize = 256;

/// The cheap, cloneable handle the request path records through.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Message>,
    on_full: OnFull,
    metrics: Arc<Metrics>,
}

impl AuditSink {
    /// Queues a record. With `block`, waits up to two seconds for room before giving up.
    pub async fn record(&self, record: AuditRecord) {
        let message = Message::Record(Box::new(record));
        let sent = match self.on_full {
            OnFull::Drop => self.tx.try_send(message).is_ok(),
            OnFull::Block => match self.tx.try_send(message) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(m)) => {
                    self.tx.send_timeout(m, BLOCK_WAIT).await.is_ok()
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        };
        if !sent {
            self.metrics.audit_dropped.inc();
            tracing::error!("audit queue full or closed; record dropped");
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
        let last = store.last()?;
        let (next_id, prev_hash) = last.map_or((1, String::new()), |r| (r.id + 1, r.hash));
        let mut chain = Chain { next_id, prev_hash };
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

struct Chain {
    next_id: u64,
    prev_hash: String,
}

impl Chain {
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
                    self.write(&mut batch, store, metrics);
                }
            }
            self.write(&mut batch, store, metrics);
        }
        if let Err(e) = store.flush() {
            metrics.audit_write_errors.inc();
            tracing::error!(error = %e, "audit flush failed");
        }
    }

    fn write(&mut self, batch: &mut Vec<AuditRecord>, store: &AuditStore, metrics: &Metrics) {
        if batch.is_empty() {
            return;
        }
        let (first_id, first_prev) = (self.next_id, self.prev_hash.clone());
        let mut chunk = Vec::with_capacity(batch.len() * 768);
        for r in batch.iter_mut() {
            let prev = std::mem::take(&mut self.prev_hash);
            chunk.extend_from_slice(&r.seal(self.next_id, prev));
            chunk.push(b'\n');
            self.prev_hash = r.hash.clone();
            self.next_id += 1;
        }
        let mut attempt = 0;
        loop {
            match store.append(first_id, &chunk) {
                Ok(()) => {
                    metrics.audit_records.inc_by(batch.len() as u64);
                    break;
                }
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "audit batch write failed; retrying");
                    std::thread::sleep(Duration::from_millis(50 << attempt));
                }
                Err(e) => {
                    metrics.audit_write_errors.inc();
                    tracing::error!(error = %e, records = batch.len(), "audit batch lost");
                    // Keep the chain continuous with what is actually stored.
                    self.next_id = first_id;
                    self.prev_hash = first_prev;
                    break;
                }
            }
        }
        batch.clear();
    }
}
