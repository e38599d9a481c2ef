//! A minimal OTLP/gRPC trace receiver (the real `opentelemetry.proto.collector.trace.v1
//! .TraceService`) that counts the spans it is sent and prints the count every second and on
//! exit: what `scripts/load.sh` exports stepguard's traces to when it measures tracing's cost.
//!
//! `cargo run --release --example otlp_sink -- --addr 127.0.0.1:4317`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

#[derive(Parser)]
struct Args {
    /// Address to listen on (gRPC, h2c).
    #[arg(long, default_value = "127.0.0.1:4317")]
    addr: SocketAddr,
}

#[derive(Clone, Default)]
struct Sink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("otlp_sink listening on {}", listener.local_addr()?);
    let sink = Sink::default();
    let spans = sink.spans.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = spans.load(Ordering::Relaxed);
            if now != last {
                println!("spans={now}");
                last = now;
            }
        }
    });
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(())
}
