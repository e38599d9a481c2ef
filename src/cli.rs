//! The command line: `serve`, `check`, `config check`, `policy test|schema`,
//! `audit verify|export|privileges|public-key`.
//! It parses and prints; the work is in the library.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{App, shutdown_signal};
use crate::config::Config;
use crate::request::RawRequest;
use audit::{AuditCommand, audit};

mod audit;

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
    /// Run the sidecar. Without --config: the quickstart config (in-memory grants, shipped
    /// policies), found relative to the working directory of a source checkout.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Decide one CheckRequest (Envoy's proto3 JSON form) and explain the decision: verdict,
    /// reasons, requirement, the policy's result and (Rego) the rules defined for the input.
    Check {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        request: PathBuf,
        /// `text` (for people) or `json` (the decision, explanation and, with --input, input).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// Also print the input document the policy was given.
        #[arg(long)]
        input: bool,
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
    /// Evidence tools: verify spools, export records, report privileges.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
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
    /// Print the JSON Schema of the policy input document (`policies/schema/input.json`).
    Schema,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { config } => match config.map_or_else(quickstart_config, Ok) {
            Ok(config) => serve(&config).await,
            Err(message) => Err(message),
        },
        Command::Check {
            config,
            request,
            format,
            input,
        } => check(&config, &request, format == "json", input).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Config::load(&file)
            .map(|_| println!("{}: ok", file.display()))
            .map_err(|e| e.to_string()),
        Command::Policy {
            command: PolicyCommand::Test { dir },
        } => policy_test(&dir),
        Command::Policy {
            command: PolicyCommand::Schema,
        } => {
            print!("{}", crate::policy::input::schema::schema_text());
            Ok(())
        }
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

/// The quickstart config `serve` uses without `--config`: only where a source checkout has it
/// (`cargo run -- serve`). Anywhere else (a container image) that is a mistake, said plainly.
const QUICKSTART_CONFIG: &str = "deploy/local/stepguard.yaml";

fn quickstart_config() -> Result<PathBuf, String> {
    let path = PathBuf::from(QUICKSTART_CONFIG);
    if path.is_file() {
        return Ok(path);
    }
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "?".into());
    Err(format!(
        "no --config given, and the quickstart config {QUICKSTART_CONFIG} (the default in a \
         source checkout) is not in the working directory {cwd}. Pass the config file: \
         `stepguard serve --config /etc/stepguard/config.yaml` (the container image's default)"
    ))
}

async fn serve(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let telemetry = crate::telemetry::init(&config.telemetry).map_err(|e| e.to_string())?;
    let app = App::build(&config).await.map_err(|e| e.to_string())?;
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))
    };
    let grpc = bind(config.listen.grpc).await?;
    let http = bind(config.listen.http).await?;
    let admin = match config.listen.admin {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    tracing::info!(
        grpc = %config.listen.grpc,
        http = %config.listen.http,
        admin = ?config.listen.admin,
        "listening"
    );
    let served = app
        .serve_with_admin(grpc, http, admin, shutdown_signal())
        .await
        .map_err(|e| e.to_string());
    // Spans still batched are exported before the process exits.
    telemetry.shutdown().await;
    served
}

async fn check(config: &Path, request: &Path, json: bool, with_input: bool) -> Result<(), String> {
    use crate::policy::PolicyEngine;
    use crate::policy::explain::{Recorder, Rules};
    let mut config = Config::load(config).map_err(|e| e.to_string())?;
    // A what-if: never written to the spool a running sidecar owns; no grant API (nothing
    // else holds the pipeline, so the policy can be wrapped).
    config.evidence = None;
    config.grant_api = None;
    let text =
        std::fs::read_to_string(request).map_err(|e| format!("{}: {e}", request.display()))?;
    let request_json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", request.display()))?;
    let raw = RawRequest::from_check_json(&request_json)?;
    // A bundle server's bundle is downloaded once; its rules are not listed (only a file source
    // can be compiled again for the interpreter).
    let rules = config
        .policy_source()
        .map(|source| Rules::load(&source))
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut app = App::build(&config).await.map_err(|e| e.to_string())?;
    app.activate_policy().await.map_err(|e| e.to_string())?;
    let pipeline = app.into_pipeline();
    let live = pipeline.policy.current().ok_or("no policy is active")?;
    let engine = live.engine();
    let recorder = std::sync::Arc::new(Recorder::new(live));
    pipeline.policy.activate(recorder.clone());
    let decision = pipeline.decide(raw).await;
    let asked = recorder.last();
    let defined = match &asked {
        Some((input, _)) => match &rules {
            Some(rules) => rules.evaluate(input).map_err(|e| e.to_string())?,
            None => None,
        },
        None => None,
    };
    let result = asked.as_ref().map(|(_, r)| match r {
        Ok(v) => v.clone(),
        Err(e) => serde_json::json!({ "error": e }),
    });
    let requirement = match &decision.verdict {
        crate::decision::Verdict::Challenge { requirement, .. } => {
            serde_json::to_value(requirement).ok()
        }
        _ => result.as_ref().and_then(|r| r.get("requirement").cloned()),
    };
    let explanation = Explanation {
        engine,
        entrypoint: &config.policy.entrypoint,
        revision: recorder.revision(),
        consulted: asked.is_some(),
        result,
        requirement,
        rules: defined,
        input: asked.filter(|_| with_input).map(|(input, _)| input),
    };
    let out = if json {
        let doc = serde_json::json!({"decision": decision, "explanation": explanation});
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
    } else {
        explanation.text(&decision)
    };
    // Ignoring a closed pipe (`stepguard check … | head`).
    let _ = writeln!(std::io::stdout().lock(), "{out}");
    Ok(())
}

/// What `check` prints beside the decision.
#[derive(serde::Serialize)]
struct Explanation<'a> {
    engine: &'static str,
    entrypoint: &'a str,
    revision: &'a str,
    /// Whether the pipeline asked the policy at all (not for public routes, missing tokens…).
    consulted: bool,
    /// The policy's raw result.
    result: Option<serde_json::Value>,
    /// `acr_values` and `max_age`, when the decision has a requirement.
    requirement: Option<serde_json::Value>,
    /// Per Rego package, the rules defined for the input; `null` for Wasm (entrypoint only).
    rules: Option<Vec<crate::policy::explain::PackageRules>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<serde_json::Value>,
}

impl Explanation<'_> {
    fn text(&self, decision: &crate::decision::Decision) -> String {
        use std::fmt::Write;
        const WIDTH: usize = 100;
        let compact = |v: &serde_json::Value| {
            let s = v.to_string();
            if s.chars().count() > WIDTH {
                format!("{}…", s.chars().take(WIDTH).collect::<String>())
            } else {
                s
            }
        };
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "decision:     {} (reason: {})",
            decision.outcome(),
            decision.reason
        );
        let _ = writeln!(out, "reasons:      {}", decision.reasons.join(", "));
        let _ = writeln!(out, "action:       {}", or_dash(&decision.action));
        let _ = writeln!(out, "subject:      {}", or_dash(&decision.subject));
        let _ = writeln!(out, "transaction:  {}", or_dash(&decision.transaction));
        match &self.requirement {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "requirement:  acr_values {}, max_age {}",
                    r["acr_values"], r["max_age"]
                );
            }
            None => {
                let _ = writeln!(out, "requirement:  -");
            }
        }
        let _ = writeln!(
            out,
            "policy:       {} {} (revision {})",
            self.engine, self.entrypoint, self.revision
        );
        let Some(result) = &self.result else {
            let _ = write!(out, "The policy was not consulted for this request.");
            return out;
        };
        let _ = writeln!(out, "result:       {}", compact(result));
        match &self.rules {
            None => {
                let _ = writeln!(
                    out,
                    "rules:        not listed: a Wasm module (or a bundle server's bundle) shows its entrypoint's result only"
                );
            }
            Some(packages) => {
                let _ = writeln!(
                    out,
                    "rules defined for this input (values cut at {WIDTH} characters; --format json for all):"
                );
                for p in packages {
                    let _ = writeln!(out, "  {}", p.package);
                    for (name, value) in &p.rules {
                        let _ = writeln!(out, "    {name} = {}", compact(value));
                    }
                }
            }
        }
        match &self.input {
            Some(input) => {
                let pretty = serde_json::to_string_pretty(input).unwrap_or_default();
                let _ = write!(out, "input:\n{pretty}");
            }
            None => {
                let _ = write!(out, "input:        (--input prints the input document)");
            }
        }
        out
    }
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
