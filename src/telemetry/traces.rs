//! OpenTelemetry spans: the OTLP/gRPC exporter, the `stepguard.check` span continuing the
//! caller's W3C trace context, and one child span per stage.
//!
//! A check's span (kind server, with the OpenTelemetry `rpc.*` attributes of a gRPC call:
//! `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) is a child of the
//! `traceparent`/`tracestate` Envoy sends in the CheckRequest's headers; its trace id goes to
//! the upstream (`x-stepguard-trace-id`), into the evidence record and into every log line of
//! the check. Stage spans exist only while spans are exported; every stage is timed for the
//! `stepguard_stage_duration_seconds` histogram either way.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Instrument;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TelemetryError;
use super::metrics;
pub use super::stage::Stage;
use crate::telemetry::config::OtlpConfig;

/// Whether spans are exported (set once the OTLP layer is installed).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(super) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The tracer provider: batches spans on its own thread and exports them over OTLP/gRPC.
/// Sampling follows the caller's decision; new traces are sampled at `sample_ratio`.
pub(super) fn provider(otlp: &OtlpConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otlp.endpoint.clone())
        .with_timeout(Duration::from_millis(otlp.timeout_ms))
        .build()
        .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
    let ratio = otlp.sample_ratio.unwrap_or(1.0);
    Ok(SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource(otlp))
        .with_batch_exporter(exporter)
        .build())
}

/// The resource of every exported span: `OTEL_RESOURCE_ATTRIBUTES` (for example
/// `k8s.pod.name=…,deployment.environment=prod`, set by the Deployment), the SDK's own
/// attributes, `service.version`, and `service.name` from `telemetry.otlp.service_name`, which
/// wins over a `service.name` in the environment.
fn resource(otlp: &OtlpConfig) -> Resource {
    Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_service_name(otlp.service_name.clone())
        .build()
}

/// The target of stage spans (traces only; the log formatter skips them).
pub const STAGE_TARGET: &str = "stepguard::stage";

/// Runs an async stage in its span and records its duration.
pub async fn stage<F: Future>(stage: Stage, work: F) -> F::Output {
    let started = Instant::now();
    let out = work.instrument(span(stage)).await;
    metrics::stage(stage, started.elapsed());
    out
}

/// Runs a synchronous stage in its span and records its duration.
pub fn stage_sync<T>(stage: Stage, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = span(stage).in_scope(work);
    metrics::stage(stage, started.elapsed());
    out
}

/// The span of one check: created as the check starts, finished with its decision.
pub struct CheckSpan {
    span: Span,
    trace_id: Option<String>,
    span_id: Option<String>,
    started: Instant,
}

impl CheckSpan {
    /// Starts the check's span, a child of the W3C trace context of the Check call (`call`:
    /// Envoy's ext_authz client span, from the gRPC metadata) or else of the request's own
    /// `headers` (lower-case names), whichever first holds a valid one.
    pub fn start(
        decision_id: &str,
        call: &HashMap<String, String>,
        headers: &HashMap<String, String>,
    ) -> Self {
        let started = Instant::now();
        let span = tracing::info_span!(
            target: "stepguard::check",
            "stepguard.check",
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = "envoy.service.auth.v3.Authorization",
            rpc.method = "Check",
            rpc.grpc.status_code = Empty,
            stepguard.decision_id = decision_id,
            trace_id = Empty,
            stepguard.action = Empty,
            stepguard.decision = Empty,
            stepguard.reason = Empty,
            stepguard.policy_revision = Empty,
            stepguard.acr.required = Empty,
            stepguard.acr.achieved = Empty,
        );
        let propagator = TraceContextPropagator::new();
        let mut parent = propagator.extract(call);
        if !parent.span().span_context().is_valid() {
            parent = propagator.extract(headers);
        }
        let remote = parent.span().span_context().clone();
        // Fails only without the OpenTelemetry layer (nothing is exported then).
        let _ = span.set_parent(parent);
        let own = span.context().span().span_context().clone();
        let (trace_id, span_id) = if own.is_valid() {
            (
                Some(own.trace_id().to_string()),
                Some(own.span_id().to_string()),
            )
        } else if remote.is_valid() {
            // Not exporting: the caller's trace still names this check.
            (Some(remote.trace_id().to_string()), None)
        } else {
            (None, None)
        };
        if let Some(trace_id) = &trace_id {
            span.record("trace_id", trace_id.as_str());
        }
        Self {
            span,
            trace_id,
            span_id,
            started,
        }
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Records the decision on the span and in the metrics; the trace and span ids to put in
    /// the decision, while spans are exported.
    pub fn finish(self, decided: &Decided<'_>) -> Option<(String, Option<String>)> {
        let span = &self.span;
        span.record("stepguard.decision", decided.outcome);
        span.record("stepguard.reason", decided.reason);
        if let Some(action) = decided.action {
            span.record("stepguard.action", action);
        }
        if let Some(revision) = decided.policy_revision {
            span.record("stepguard.policy_revision", revision);
        }
        if let Some(required) = &decided.acr_required {
            span.record("stepguard.acr.required", required.as_str());
        }
        if decided.fault {
            span.record("otel.status_code", "error");
        }
        // Every decision, a fault's included, is an OK gRPC answer (a CheckResponse).
        span.record("rpc.grpc.status_code", 0_i64);
        metrics::decision(
            decided.action.unwrap_or_default(),
            decided.outcome,
            decided.reason,
        );
        metrics::stage(Stage::Total, self.started.elapsed());
        self.trace_id.map(|trace_id| (trace_id, self.span_id))
    }
}

/// A stage's span, while spans are exported.
fn span(stage: Stage) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: STAGE_TARGET, "stage", otel.name = stage.span_name())
}

/// What a check decided, as its span and `stepguard_decisions_total` record it.
#[derive(Debug, Clone, Default)]
pub struct Decided<'a> {
    /// The `outcome` label: allow, challenge, unauthenticated, deny, rate_limited, fault.
    pub outcome: &'static str,
    pub reason: &'a str,
    pub action: Option<&'a str>,
    pub policy_revision: Option<&'a str>,
    /// The challenge's `acr_values`, space-separated.
    pub acr_required: Option<String>,
    /// A dependency or stepguard failed (the span's status is an error).
    pub fault: bool,
}

/// Records the authentication the decision rests on (the grant's, or the token's) on the
/// check span; call from within it.
pub fn record_acr_achieved(acr: &str) {
    Span::current().record("stepguard.acr.achieved", acr);
}

/// The trace and span ids of the current span, while spans are exported (the check span, when
/// called from within it outside any stage).
pub fn current_ids() -> (Option<String>, Option<String>) {
    if !enabled() {
        return (None, None);
    }
    let cx = Span::current().context();
    let own = cx.span().span_context().clone();
    if own.is_valid() {
        (
            Some(own.trace_id().to_string()),
            Some(own.span_id().to_string()),
        )
    } else {
        (None, None)
    }
}
