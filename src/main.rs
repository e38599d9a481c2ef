//! The `stepguard` binary: parse the command line and run it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// regorus and serde allocate heavily on the check path; mimalloc is markedly faster than the
/// system allocator there (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    stepguard::cli::run(stepguard::cli::Cli::parse()).await
}
