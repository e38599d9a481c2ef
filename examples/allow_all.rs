//! A trivial Envoy ext_authz (gRPC v3) server that allows every request: the baseline
//! `scripts/load.sh` compares stepguard against, so the cost of the ext_authz round trip itself
//! (Envoy's gRPC client, HTTP/2, tonic) is separated from the cost of stepguard's decision.
//!
//! `cargo run --release --example allow_all -- --addr 127.0.0.1:9291`

use std::net::SocketAddr;

use clap::Parser;
use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use tonic::{Request, Response, Status};

#[derive(Parser)]
struct Args {
    /// Address to listen on (gRPC, h2c).
    #[arg(long, default_value = "127.0.0.1:9291")]
    addr: SocketAddr,
}

struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse::with_status(Status::ok(""))))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("allow_all listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(())
}
