//! Logs, traces and metrics.
//!
//! - **Logs**: JSON (default) or text on stderr, filtered by `telemetry.log_level` or `RUST_LOG`.
//!   Every event inside a check carries the check span's fields (`stepguard.decision_id`,
//!   `trace_id`) in its `span`/`spans` keys. No token or secret is ever logged: decisions log
//!   ids and reason codes only.
//! - **Traces** ([`traces`]): with `telemetry.otlp`, one `stepguard.check` span per check, a child
//!   of the W3C `traceparent` Envoy sends, with a child span per stage; exported over OTLP/gRPC
//!   in batches on a background thread. Without it nothing is exported and no stage span exists.
//! - **Metrics** ([`metrics`]): the `stepguard_*` families and the standard `process_*` ones,
//!   rendered as Prometheus text at `/metrics` (the admin port, `listen.admin`, when set).

pub mod config;
pub mod metrics;
mod process;
pub mod stage;
pub mod traces;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::telemetry::config::TelemetryConfig;

pub use traces::{CheckSpan, stage, stage_sync};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Otlp(String),
}

/// What was installed; [`Telemetry::shutdown`] exports the spans still pending.
#[must_use = "shut telemetry down to flush pending spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes pending spans and stops the exporter (bounded by the export timeout).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        traces::set_enabled(false);
        // Shutting down blocks on the export thread: not on a reactor thread.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter shutdown"),
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown task failed"),
        }
    }
}

/// Installs the global subscriber: logs, and spans to OTLP when `telemetry.otlp` is set. Call
/// once, from within a Tokio runtime (the exporter's channel lives on it). A second call in
/// the same process installs nothing and exports nothing.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Stage spans are for traces only: logs carry the check span's fields, and the formatter
    // does not spend time recording eight more spans per check.
    let filter = filter.and(filter_fn(|meta| {
        !(meta.is_span() && meta.target() == traces::STAGE_TARGET)
    }));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if config.log_format == "json" {
        fmt.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let Some(otlp) = &config.otlp else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Ok(Telemetry { provider: None });
    };
    let provider = traces::provider(otlp)?;
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "stepguard");
    // Spans go to OTLP whatever the log level: stepguard's own spans, no log events (they are
    // logs, and some are whole evidence records).
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_filter(filter_fn(|meta| {
            meta.is_span()
                && meta.target().starts_with("stepguard")
                && *meta.level() <= tracing::Level::INFO
        }));
    if tracing_subscriber::registry()
        .with(fmt)
        .with(spans)
        .try_init()
        .is_err()
    {
        // Another subscriber was installed first: its spans would never reach this exporter.
        let _ = provider.shutdown();
        return Ok(Telemetry { provider: None });
    }
    traces::set_enabled(true);
    tracing::info!(endpoint = %otlp.endpoint, service = %otlp.service_name, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}
