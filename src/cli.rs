//! The command line: `serve`, `check`, `config check`, `policy test`, `audit verify|export|public-key`.
//! It parses and prints; the work is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{App, shutdown_signal};
use crate::config::Config;
use crate::request::RawRequest;

#[derive(Debug, Parser)]
#[command(
    name = "stepguard",
    version,
    about = "Transaction-level step-up authentication for Envoy ext_authz"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar (default: the quickstart config, in-memory grants, shipped policies).
    Serve {
        #[arg(long, default_value = "deploy/local/stepguard.yaml")]
        config: PathBuf,
    },
    /// Decide one CheckRequest (Envoy's proto3 JSON form) and print the decision.
    Check {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        request: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Evidence tools: verify spools, export records.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify spool files (segments, chain directories or a spool directory): hash chain,
    /// signatures, sequence, checkpoints. Names the first record altered, removed, reordered or
    /// truncated, and exits non-zero.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A public key (PEM, DER or raw) to check signatures with; repeat for rotated keys.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
    /// Print the decision records that match, as JSON lines (run `verify` first).
    Export {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// From this time (RFC 3339 or unix seconds), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Until this time (RFC 3339 or unix seconds), exclusive.
        #[arg(long)]
        to: Option<String>,
        /// The subject: `iss|sub`, or `sub`.
        #[arg(long)]
        subject: Option<String>,
        /// A transaction digest.
        #[arg(long)]
        transaction: Option<String>,
    },
    /// Print the public key (PEM) of an evidence signing key, for `verify --key`.
    PublicKey { signing_key: PathBuf },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run the Rego unit tests (`test_*` rules in `*_test.rego`), like `opa test`.
    Test {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { config } => serve(&config).await,
        Command::Check { config, request } => check(&config, &request).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Config::load(&file)
            .map(|_| println!("{}: ok", file.display()))
            .map_err(|e| e.to_string()),
        Command::Policy {
            command: PolicyCommand::Test { dir },
        } => policy_test(&dir),
        Command::Audit { command } => audit(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stepguard: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let telemetry = crate::telemetry::init(&config.telemetry).map_err(|e| e.to_string())?;
    let app = App::build(&config).await.map_err(|e| e.to_string())?;
    let grpc = tokio::net::TcpListener::bind(config.listen.grpc)
        .await
        .map_err(|e| format!("binding {}: {e}", config.listen.grpc))?;
    let http = tokio::net::TcpListener::bind(config.listen.http)
        .await
        .map_err(|e| format!("binding {}: {e}", config.listen.http))?;
    tracing::info!(grpc = %config.listen.grpc, http = %config.listen.http, "listening");
    let served = app
        .serve(grpc, http, shutdown_signal())
        .await
        .map_err(|e| e.to_string());
    // Spans still batched are exported before the process exits.
    telemetry.shutdown().await;
    served
}

async fn check(config: &Path, request: &Path) -> Result<(), String> {
    let mut config = Config::load(config).map_err(|e| e.to_string())?;
    // A what-if: never written to the spool a running sidecar owns.
    config.evidence = None;
    let text =
        std::fs::read_to_string(request).map_err(|e| format!("{}: {e}", request.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", request.display()))?;
    let raw = RawRequest::from_check_json(&json)?;
    let mut app = App::build(&config).await.map_err(|e| e.to_string())?;
    app.activate_policy().await.map_err(|e| e.to_string())?;
    let decision = app.pipeline().decide(raw).await;
    let out = serde_json::to_string_pretty(&decision).map_err(|e| e.to_string())?;
    println!("{out}");
    Ok(())
}

fn policy_test(dir: &Path) -> Result<(), String> {
    use crate::policy::rego::{TestOutcome, run_tests};
    let results = run_tests(dir).map_err(|e| e.to_string())?;
    let mut failed = 0;
    for r in &results {
        let (label, detail) = match &r.outcome {
            TestOutcome::Pass => ("PASS", String::new()),
            TestOutcome::Fail => ("FAIL", String::new()),
            TestOutcome::Error(e) => ("ERROR", format!(": {e}")),
        };
        if r.outcome != TestOutcome::Pass {
            failed += 1;
        }
        println!("{}: {label} ({:.1?}){detail}", r.name, r.elapsed);
    }
    println!("{}", "-".repeat(80));
    println!("PASS: {}/{}", results.len() - failed, results.len());
    if failed > 0 {
        println!("FAIL: {failed}/{}", results.len());
        return Err(format!("{failed} policy test(s) failed"));
    }
    if results.is_empty() {
        return Err("no policy tests found".into());
    }
    Ok(())
}

fn audit(command: AuditCommand) -> Result<(), String> {
    use crate::evidence::{PublicKey, SigningKey, audit};
    match command {
        AuditCommand::Verify { files, keys } => {
            let keys = keys
                .iter()
                .map(|k| PublicKey::load(k))
                .collect::<Result<Vec<_>, _>>()?;
            let report = audit::verify(&files, &keys)?;
            print!("{report}");
            match report.first_problem() {
                None if report.ok() => Ok(()),
                None => Err("no evidence records found".into()),
                Some(p) => Err(p.to_string()),
            }
        }
        AuditCommand::Export {
            files,
            from,
            to,
            subject,
            transaction,
        } => {
            let time = |t: Option<String>| t.map(|t| crate::evidence::parse_time(&t)).transpose();
            let filter = audit::Filter {
                from: time(from)?,
                to: time(to)?,
                subject,
                transaction,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let (_, skipped) = audit::export(&files, &filter, &mut out)?;
            std::io::Write::flush(&mut out).map_err(|e| e.to_string())?;
            if skipped > 0 {
                eprintln!("stepguard: {skipped} unreadable line(s) skipped: run `audit verify`");
            }
            Ok(())
        }
        AuditCommand::PublicKey { signing_key } => {
            let key = SigningKey::load(&signing_key)
                .map_err(|e| format!("{}: {e}", signing_key.display()))?;
            print!("{}", key.public_key().to_pem());
            Ok(())
        }
    }
}
