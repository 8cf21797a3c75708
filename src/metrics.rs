//! Prometheus metrics (prefix `agentwall_`). Label children used per request are resolved once
//! here so the hot path only increments atomics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::audit::record::{AuditDecision, ProxyMode};

pub struct Metrics {
    registry: Registry,
    /// `requests_total{decision,mode}`, indexed `[decision][mode]`.
    requests: [[IntCounter; 3]; 3],
    pub request_duration: Histogram,
    pub policy_reloads_ok: IntCounter,
    pub policy_reloads_err: IntCounter,
    pub policy_last_reload_success: IntGauge,
    pub policy_rules: IntGauge,
    pub audit_records: IntCounter,
    pub audit_queue_depth: IntGauge,
    pub audit_write_errors: IntCounter,
    pub audit_dropped: IntCounter,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounter,
    pub detections: IntCounterVec,
    pub upstream_errors: IntCounterVec,
}

const DECISIONS: [AuditDecision; 3] = [
    AuditDecision::Allow,
    AuditDecision::Deny,
    AuditDecision::Error,
];
const MODES: [ProxyMode; 3] = [ProxyMode::Forward, ProxyMode::Connect, ProxyMode::Reverse];

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("agentwall".into()), None)?;
        let requests_vec = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests handled, by decision and proxy mode",
            ),
            &["decision", "mode"],
        )?;
        registry.register(Box::new(requests_vec.clone()))?;
        let requests = DECISIONS
            .map(|d| MODES.map(|m| requests_vec.with_label_values(&[d.as_str(), m.as_str()])));
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request head to the end of the response",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
        )?;
        registry.register(Box::new(request_duration.clone()))?;
        let reloads = IntCounterVec::new(
            Opts::new("policy_reloads_total", "Policy reload attempts, by result"),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter_vec =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        Ok(Metrics {
            requests,
            request_duration,
            policy_reloads_ok: reloads.with_label_values(&["ok"]),
            policy_reloads_err: reloads.with_label_values(&["error"]),
            policy_last_reload_success: gauge(
                "policy_last_reload_success",
                "1 if the last policy reload succeeded",
            )?,
            policy_rules: gauge("policy_rules", "Rules in the active policy set")?,
            audit_records: counter("audit_records_total", "Audit records written to the store")?,
            audit_queue_depth: gauge("audit_queue_depth", "Audit records waiting to be written")?,
            audit_write_errors: counter(
                "audit_write_errors_total",
                "Audit batches that failed to write",
            )?,
            audit_dropped: counter(
                "audit_dropped_total",
                "Audit records dropped because the queue was full",
            )?,
            auth_failures: counter_vec(
                "auth_failures_total",
                "Rejected agent credentials, by reason",
                "reason",
            )?,
            rate_limited: counter("rate_limited_total", "Requests refused by a rate limit")?,
            detections: counter_vec(
                "detections_total",
                "Secret detector hits, by detector",
                "detector",
            )?,
            upstream_errors: counter_vec(
                "upstream_errors_total",
                "Upstream failures, by kind",
                "kind",
            )?,
            registry,
        })
    }

    pub fn request(&self, decision: AuditDecision, mode: ProxyMode) -> &IntCounter {
        &self.requests[decision as usize][mode as usize]
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
