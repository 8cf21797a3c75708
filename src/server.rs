//! Assembles one pingora `Server`: the proxy service, the admin service and background work,
//! then runs it until SIGTERM/SIGINT and flushes the audit store before returning.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::audit::{AuditStore, AuditWriter};
use crate::config::Config;
use crate::egress::EgressGuard;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::policy::PolicyStore;
use crate::proxy::routes::RouteTable;
use crate::proxy::Agentwall;

/// Serves until a shutdown signal, then drains, flushes the audit store and returns.
pub fn run(config: Config) -> anyhow::Result<()> {
    // Everything that can refuse the configuration comes before anything that must be shut down.
    let routes = RouteTable::new(&config.routes).map_err(|e| anyhow!("routes: {e}"))?;
    let identity = Arc::new(Identity::from_config(&config.auth).map_err(|e| anyhow!("{e}"))?);
    identity.watch().context("watching the JWK set")?;
    let metrics = Arc::new(Metrics::new().context("metrics registry")?);
    let policies = PolicyStore::open(
        &config.policies.dir,
        config.policies.default_effect,
        Arc::clone(&metrics),
    )
    .map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow!("policies are invalid:\n{}", lines.join("\n"))
    })?;
    policies
        .watch()
        .with_context(|| format!("watching {}", config.policies.dir.display()))?;
    let store = Arc::new(AuditStore::open(
        &config.audit.dir,
        config.audit.flush_interval.0,
    )?);
    let (writer, sink) = AuditWriter::start(
        Arc::clone(&store),
        config.audit.queue,
        config.audit.on_full,
        Arc::clone(&metrics),
    )?;

    let threads = match config.proxy.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let grace = config.proxy.grace_period.0;
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(ceil_secs(grace)),
        graceful_shutdown_timeout_seconds: Some(ceil_secs(grace).max(1)),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let proxy = Agentwall {
        identity,
        policies: Arc::clone(&policies),
        routes,
        egress: EgressGuard::new(&config.egress),
        audit: sink.clone(),
        metrics: Arc::clone(&metrics),
        upstream_timeout: config.proxy.upstream_timeout.0,
    };
    let mut proxy_service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        proxy,
        "agentwall proxy",
    );
    for addr in &config.proxy.listen {
        proxy_service.add_tcp(addr);
    }
    let mut admin = Service::new(
        "agentwall admin".to_string(),
        AdminApp {
            policies: Arc::clone(&policies),
            store: Arc::clone(&store),
            audit: sink,
            metrics,
            token: config.admin.token.clone(),
        },
    );
    admin.threads = Some(1);
    admin.add_tcp(&config.admin.listen);
    server.add_service(proxy_service);
    server.add_service(admin);
    server.add_service(background_service(
        "sighup reload",
        SighupReload { policies },
    ));

    tracing::info!(
        proxy = ?config.proxy.listen,
        admin = %config.admin.listen,
        "agentwall listening"
    );
    server.run(RunArgs::default());
    tracing::info!("shutting down: flushing audit store");
    writer.shutdown();
    let last = store.last().ok().flatten().map_or(0, |r| r.id);
    tracing::info!(last_record = last, "audit store flushed; bye");
    Ok(())
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// SIGHUP reloads the policies (systemd `ExecReload`).
struct SighupReload {
    policies: Arc<PolicyStore>,
}

#[async_trait]
impl BackgroundService for SighupReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading policies");
                    let store = Arc::clone(&self.policies);
                    let _ = tokio::task::spawn_blocking(move || store.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
