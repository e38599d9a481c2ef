//! The `stepguard` binary: parse the command line and run it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    stepguard::cli::run(stepguard::cli::Cli::parse()).await
}
