//! The `agentwall` command line: parses flags and hands off to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "agentwall",
    version,
    about = "An egress firewall for AI agents"
)]
struct Cli {
    /// Log format on stderr (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the proxy and the admin API.
    Run {
        #[arg(long, env = "AGENTWALL_CONFIG", default_value = "conf/agentwall.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and every policy; exit 1 with file:line errors.
    Check {
        #[arg(long, env = "AGENTWALL_CONFIG", default_value = "conf/agentwall.toml")]
        config: PathBuf,
    },
    /// Print the decision for one request as JSON (the proxy's own admission code).
    Explain {
        #[arg(long, env = "AGENTWALL_CONFIG", default_value = "conf/agentwall.toml")]
        config: PathBuf,
        #[arg(long)]
        agent: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Absolute URL (forward proxy) or a path under a route prefix.
        #[arg(long)]
        url: String,
        /// Request header, `Name: value`; repeatable.
        #[arg(long = "header", value_name = "K:V")]
        headers: Vec<String>,
        /// A claim of the agent's token, `name=value` (JSON values allowed); repeatable.
        #[arg(long = "claim", value_name = "K=V")]
        claims: Vec<String>,
        /// Request body (accepted; body inspection is not available yet).
        #[arg(long)]
        body_file: Option<PathBuf>,
    },
    /// Mint a development token with the configured HMAC key ([auth.jwt] secret).
    Token {
        #[arg(long, env = "AGENTWALL_CONFIG", default_value = "conf/agentwall.toml")]
        config: PathBuf,
        /// The agent id (the `sub` claim, and `agent_claim` if that differs).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// An extra claim, `name=value` (JSON values allowed); repeatable.
        #[arg(long = "claim", value_name = "K=V")]
        claims: Vec<String>,
    },
    /// Run policy test cases (default: <policies dir>/tests/*.toml); exit 1 on any failure.
    Test {
        #[arg(long, env = "AGENTWALL_CONFIG", default_value = "conf/agentwall.toml")]
        config: PathBuf,
        dir: Option<PathBuf>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { config } => match agentwall::Config::load(&config) {
            Ok(config) => match agentwall::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("agentwall: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => check(&config),
        Command::Explain {
            config,
            agent,
            method,
            url,
            headers,
            claims,
            body_file,
        } => explain(&config, agent, method, url, headers, claims, body_file),
        Command::Token {
            config,
            sub,
            ttl,
            claims,
        } => token(&config, &sub, ttl.into(), &claims),
        Command::Test { config, dir } => test(&config, dir),
    }
}

fn load_tools(
    path: &std::path::Path,
) -> Result<
    (
        agentwall::Config,
        agentwall::policy::PolicySet,
        agentwall::proxy::routes::RouteTable,
    ),
    ExitCode,
> {
    let config = agentwall::Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })?;
    let (policies, routes) = agentwall::tooling::load(&config).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })?;
    Ok((config, policies, routes))
}

fn explain(
    config: &std::path::Path,
    agent: String,
    method: String,
    url: String,
    headers: Vec<String>,
    claims: Vec<String>,
    body_file: Option<PathBuf>,
) -> ExitCode {
    let (_, policies, routes) = match load_tools(config) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if let Some(file) = body_file {
        if let Err(e) = std::fs::metadata(&file) {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    }
    let mut parsed = Vec::with_capacity(headers.len());
    for h in headers {
        match h.split_once(':') {
            Some((k, v)) => parsed.push((k.trim().to_string(), v.trim().to_string())),
            None => {
                eprintln!("--header {h:?}: write Name:value");
                return ExitCode::from(2);
            }
        }
    }
    let claims = match agentwall::tooling::parse_claims(&claims) {
        Ok(c) => (!c.is_empty()).then_some(c),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let spec = agentwall::tooling::RequestSpec {
        agent,
        method,
        url,
        headers: parsed,
        claims,
    };
    match agentwall::tooling::explain(&policies, &routes, &spec) {
        Ok(explanation) => match serde_json::to_string_pretty(&explanation) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn token(
    config: &std::path::Path,
    sub: &str,
    ttl: std::time::Duration,
    claims: &[String],
) -> ExitCode {
    let config = match agentwall::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(jwt) = config.auth.jwt.as_ref() else {
        eprintln!("agentwall token needs [auth.jwt] with an HS* algorithm and a secret");
        return ExitCode::FAILURE;
    };
    let extra: Vec<(String, serde_json::Value)> = match agentwall::tooling::parse_claims(claims) {
        Ok(c) => c.into_iter().collect(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match agentwall::identity::mint(jwt, sub, ttl, &extra) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn test(config: &std::path::Path, dir: Option<PathBuf>) -> ExitCode {
    let (config, policies, routes) = match load_tools(config) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let dir = dir.unwrap_or_else(|| config.policies.dir.join("tests"));
    let report = agentwall::tooling::run_tests(&policies, &routes, &dir);
    for line in &report.lines {
        println!("{line}");
    }
    println!(
        "policy tests: {} passed, {} failed",
        report.passed, report.failed
    );
    if report.failed == 0 && report.passed > 0 {
        ExitCode::SUCCESS
    } else {
        if report.passed == 0 && report.failed == 0 {
            eprintln!("no test cases in {}", dir.display());
        }
        ExitCode::FAILURE
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match agentwall::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = agentwall::identity::Identity::from_config(&config.auth) {
        eprintln!("{}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    match agentwall::policy::PolicySet::load_dir(
        &config.policies.dir,
        config.policies.default_effect,
    ) {
        Ok(set) => {
            println!(
                "ok: {} policies, {} rules, version {}",
                set.summaries.len(),
                set.rule_count(),
                set.version
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

// Per-request allocations are many and short-lived; mimalloc serves them without glibc's
// arena locking and consolidation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
