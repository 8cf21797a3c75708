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
