//! The active policy set: an `ArcSwap` read lock-free per request, replaced only by a set that
//! compiled cleanly. Reloads come from the directory watcher, SIGHUP or the admin API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};

use super::compile::{PolicyError, PolicySet};
use crate::config::DefaultEffect;
use crate::metrics::Metrics;

/// The outcome of the last reload attempt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadStatus {
    #[serde(serialize_with = "crate::audit::record::serialize_time")]
    pub at: SystemTime,
    pub ok: bool,
    pub error: Option<String>,
}

/// The hot-reloadable policy set.
pub struct PolicyStore {
    dir: PathBuf,
    default_effect: DefaultEffect,
    current: ArcSwap<PolicySet>,
    // Touched only by reloads and the admin API, never per request.
    status: Mutex<(SystemTime, ReloadStatus)>,
    // Serializes reloads so a slow one cannot overwrite a newer one.
    reload_lock: Mutex<()>,
    metrics: Arc<Metrics>,
}

impl PolicyStore {
    /// Loads the directory; the first load must succeed.
    pub fn open(
        dir: &Path,
        default_effect: DefaultEffect,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<PolicyStore>, Vec<PolicyError>> {
        let set = PolicySet::load_dir(dir, default_effect)?;
        metrics.policy_rules.set(set.rule_count() as i64);
        metrics.policy_last_reload_success.set(1);
        let now = SystemTime::now();
        Ok(Arc::new(PolicyStore {
            dir: dir.to_path_buf(),
            default_effect,
            current: ArcSwap::from_pointee(set),
            status: Mutex::new((
                now,
                ReloadStatus {
                    at: now,
                    ok: true,
                    error: None,
                },
            )),
            reload_lock: Mutex::new(()),
            metrics,
        }))
    }

    /// The active set; cheap, lock-free.
    pub fn current(&self) -> arc_swap::Guard<Arc<PolicySet>> {
        self.current.load()
    }

    /// When the active set was loaded, and the last reload attempt.
    pub fn status(&self) -> (SystemTime, ReloadStatus) {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads from disk. On failure the active set is kept and the errors are returned as
    /// `file:line: message` lines.
    pub fn reload(&self) -> Result<(), String> {
        let _serial = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        let result = PolicySet::load_dir(&self.dir, self.default_effect);
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(set) => {
                let changed = set.version != self.current.load().version;
                self.metrics.policy_rules.set(set.rule_count() as i64);
                self.metrics.policy_last_reload_success.set(1);
                self.metrics.policy_reloads_ok.inc();
                if changed {
                    tracing::info!(
                        version = %set.version,
                        policies = set.policies.len(),
                        rules = set.rule_count(),
                        "policies reloaded"
                    );
                    self.current.store(Arc::new(set));
                    status.0 = now;
                }
                status.1 = ReloadStatus {
                    at: now,
                    ok: true,
                    error: None,
                };
                Ok(())
            }
            Err(errors) => {
                let text = errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
                for e in &errors {
                    tracing::error!(error = %e, "policy reload rejected; previous policies stay active");
                }
                self.metrics.policy_last_reload_success.set(0);
                self.metrics.policy_reloads_err.inc();
                status.1 = ReloadStatus {
                    at: now,
                    ok: false,
                    error: Some(text.clone()),
                };
                Err(text)
            }
        }
    }

    /// Watches the policy directory and reloads after changes settle (create, modify,
    /// delete, rename). Runs on its own thread for the life of the process.
    pub fn watch(self: &Arc<Self>) -> notify::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        let store = Arc::clone(self);
        std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || {
                let _keep_alive = watcher;
                const SETTLE: Duration = Duration::from_millis(150);
                while let Ok(event) = rx.recv() {
                    if !relevant(&event) {
                        continue;
                    }
                    // Debounce: editors write, rename and chmod in quick succession.
                    while let Ok(_more) = rx.recv_timeout(SETTLE) {}
                    let _ = store.reload();
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(())
    }
}

fn relevant(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(e) => matches!(
            e.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
        ),
        Err(e) => {
            tracing::warn!(error = %e, "policy watcher error");
            false
        }
    }
}
