//! The audit trail: one record per request, sent over a bounded channel to a writer thread
//! that appends hash-chained batches to an embedded sled store.

pub mod record;
pub mod store;
pub mod writer;

pub use record::{AuditDecision, AuditRecord, ProxyMode};
pub use store::{AuditStore, LogQuery};
pub use writer::{AuditFull, AuditSink, AuditSlot, AuditWriter, Chain};
