//! The command line: `serve`, `check`, `config check`, `policy test`.

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
    crate::telemetry::init(&config.telemetry);
    let app = App::build(&config).await.map_err(|e| e.to_string())?;
    let grpc = tokio::net::TcpListener::bind(config.listen.grpc)
        .await
        .map_err(|e| format!("binding {}: {e}", config.listen.grpc))?;
    let http = tokio::net::TcpListener::bind(config.listen.http)
        .await
        .map_err(|e| format!("binding {}: {e}", config.listen.http))?;
    tracing::info!(grpc = %config.listen.grpc, http = %config.listen.http, "listening");
    app.serve(grpc, http, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn check(config: &Path, request: &Path) -> Result<(), String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let text =
        std::fs::read_to_string(request).map_err(|e| format!("{}: {e}", request.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", request.display()))?;
    let raw = RawRequest::from_check_json(&json)?;
    let app = App::build(&config).await.map_err(|e| e.to_string())?;
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
