//! The test kit from the shell, for the load driver (`scripts/load.sh`) and anyone wiring a
//! stepguard by hand: writes an Envoy bootstrap from `deploy/local/envoy.yaml` or a standalone
//! copy of the quickstart config, with chosen ports.
//!
//! ```sh
//! cargo run --features testkit --example harness -- envoy --listen 10000 --admin 9901 --authz-grpc 9191 --authz-http 9192
//! cargo run --features testkit --example harness -- config --grpc 9191 --http 9192 --otlp 4317
//! ```

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use stepguard::testkit::config::Standalone;
use stepguard::testkit::envoy::{Authz, Bootstrap, Routes};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// An Envoy bootstrap in front of the quickstart's direct responses.
    Envoy {
        #[arg(long)]
        listen: u16,
        #[arg(long)]
        admin: u16,
        /// The ext_authz server's gRPC port; without it, no ext_authz filter (a baseline).
        #[arg(long)]
        authz_grpc: Option<u16>,
        /// stepguard's HTTP port, routed at `/.stepguard/`.
        #[arg(long)]
        authz_http: Option<u16>,
        #[arg(long, default_value_t = 500)]
        timeout_ms: u64,
    },
    /// The quickstart config, standalone: absolute paths, these ports and switches.
    Config {
        #[arg(long)]
        grpc: u16,
        #[arg(long)]
        http: u16,
        /// The policy directory (default: the repository's `policies/`).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Export traces over OTLP/gRPC to 127.0.0.1:PORT.
        #[arg(long)]
        otlp: Option<u16>,
        #[arg(long, default_value_t = 1.0)]
        sample_ratio: f64,
        /// Evidence off.
        #[arg(long)]
        no_evidence: bool,
        /// The grant store on this Redis URL.
        #[arg(long)]
        redis: Option<String>,
    },
}

fn main() {
    let text = match Args::parse().what {
        What::Envoy {
            listen,
            admin,
            authz_grpc,
            authz_http,
            timeout_ms,
        } => Bootstrap {
            listener_port: listen,
            admin_port: admin,
            authz: authz_grpc.map(|grpc_port| Authz {
                grpc_port,
                http_port: authz_http,
                timeout_ms,
            }),
            routes: Routes::Demo,
            otlp_port: None,
        }
        .yaml(),
        What::Config {
            grpc,
            http,
            policies,
            otlp,
            sample_ratio,
            no_evidence,
            redis,
        } => Standalone {
            grpc_port: grpc,
            http_port: http,
            policies,
            otlp: otlp.map(|port| (port, sample_ratio)),
            no_evidence,
            redis,
        }
        .render(),
    };
    print!("{text}");
}
