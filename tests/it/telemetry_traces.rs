//! Traces over OTLP, received by an in-test OTLP/gRPC collector (the real TraceService):
//! the real `stepguard serve` continues the caller's W3C trace context, with a child span per
//! stage and the decision's attributes; the trace id reaches the response headers, the evidence
//! record and every log line of the check; SIGTERM flushes pending spans. Then through real
//! Envoy with its OpenTelemetry tracer exporting to the same collector: one trace, stepguard's
//! span a child of Envoy's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::envoy::{Envoy, EnvoyConfig, TempDir, manifest_dir, traced_bootstrap};
use crate::support::otlp::{Receiver, Span};
use crate::support::ports::free_port;
use crate::support::stack::{TRANSFER, header};
use crate::support::tokens::token;
use crate::support::upstream::EchoUpstream;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use reqwest::StatusCode;
use serde_json::Value;

/// `stepguard serve` as a process, exporting to `otlp`; SIGTERM on drop.
struct Stepguard {
    child: Child,
    grpc: u16,
    http: u16,
    config: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Stepguard {
    fn start(name: &str, otlp: &str) -> Stepguard {
        let dir = TempDir::new(name);
        let (grpc, http) = (free_port(), free_port());
        let local = manifest_dir().join("deploy/local");
        let text = std::fs::read_to_string(local.join("stepguard.yaml")).unwrap();
        let telemetry = "telemetry:\n  log_format: json\n  log_level: info\n";
        assert!(
            text.contains(telemetry),
            "quickstart telemetry section changed"
        );
        let text = text
            .replace("127.0.0.1:9191", &format!("127.0.0.1:{grpc}"))
            .replace("127.0.0.1:9192", &format!("127.0.0.1:{http}"))
            .replace(
                "dir: stepguard-evidence",
                &format!("dir: {}", dir.path().join("spool").display()),
            )
            .replace(
                telemetry,
                &format!(
                    "{telemetry}  otlp:\n    endpoint: {otlp}\n    service_name: stepguard-test\n    timeout_ms: 2000\n"
                ),
            );
        // Beside the quickstart, so its relative paths resolve the same way.
        let config = local.join(format!(".test-{name}-{}.yaml", std::process::id()));
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("stepguard.log");
        let child = Command::new(env!("CARGO_BIN_EXE_stepguard"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.pod.name=stepguard-test-0,deployment.environment=test,service.name=not-this",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Stepguard {
            child,
            grpc,
            http,
            config,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while support::envoy::http_get(http, "/readyz", Duration::from_millis(200)).map(|r| r.0)
            != Ok(200)
        {
            assert!(
                Instant::now() < deadline,
                "stepguard never became ready:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spool(&self) -> PathBuf {
        self._dir.path().join("spool")
    }

    /// SIGTERM, and waits (bounded) for a clean exit.
    fn stop(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status:?}\n{}", self.log_text());
                return;
            }
            if started.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                panic!("stepguard did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Stepguard {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

/// `POST /v1/keys/K1/export` (`keys.export`: a fresh aal3 sign-in for each transaction).
fn export_check(headers: &[(&str, &str)]) -> CheckRequest {
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json"));
    crate::support::check::request("POST", "/v1/keys/K1/export", &headers, "{}")
}

/// The response's status and headers (OK headers for the upstream, denied ones for the client).
fn answer(r: &CheckResponse) -> (u16, HashMap<String, String>) {
    let pairs = |h: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        h.iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect::<HashMap<_, _>>()
    };
    match r.http_response.as_ref().unwrap() {
        HttpResponse::OkResponse(ok) => (200, pairs(&ok.headers)),
        HttpResponse::DeniedResponse(d) => (d.status.unwrap().code as u16, pairs(&d.headers)),
        HttpResponse::ErrorResponse(_) => (0, HashMap::new()),
    }
}

fn one<'a>(spans: &'a [Span], what: &str, pred: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(found.len(), 1, "expected one {what} in {spans:#?}");
    found[0]
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> HashSet<&'a str> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .inspect(|s| assert_eq!(s.trace_id, parent.trace_id))
        .map(|s| s.name.as_str())
        .collect()
}

/// The evidence record of `decision_id` in the spool (one directory per chain).
fn evidence_record(spool: &std::path::Path, decision_id: &str) -> Value {
    for chain in std::fs::read_dir(spool).unwrap() {
        let chain = chain.unwrap().path();
        if !chain.is_dir() {
            continue;
        }
        for segment in std::fs::read_dir(&chain).unwrap() {
            let text = std::fs::read_to_string(segment.unwrap().path()).unwrap_or_default();
            for line in text.lines() {
                let v: Value = match serde_json::from_str(line) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if v["kind"] == "decision" && v["decision_id"] == decision_id {
                    return v;
                }
            }
        }
    }
    panic!("no evidence record for {decision_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_span_continues_the_callers_trace() {
    let receiver = Receiver::start().await;
    let mut sg = Stepguard::start("otlp-check", &receiver.endpoint());
    let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{}", sg.grpc))
        .await
        .unwrap();

    // A weak session: challenged (RFC 9470), in the caller's trace.
    let (trace1, parent1) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let weak = token("alice", "aal1", 30);
    let bearer = format!("Bearer {weak}");
    let traceparent = format!("00-{trace1}-{parent1}-01");
    let r = client
        .check(export_check(&[
            ("authorization", &bearer),
            ("traceparent", &traceparent),
            ("tracestate", "vendor=1"),
        ]))
        .await
        .unwrap()
        .into_inner();
    let (status, headers) = answer(&r);
    assert_eq!(status, 401, "{r:?}");
    assert_eq!(headers["x-stepguard-trace-id"], trace1);
    let decision1 = headers["x-stepguard-decision-id"].clone();

    // The RFC 9470 retry with a sign-in after the challenge completes it and spends its grant.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (trace2, parent2) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let strong = format!("Bearer {}", token("alice", "aal3", 0));
    let traceparent = format!("00-{trace2}-{parent2}-01");
    let r = client
        .check(export_check(&[
            ("authorization", &strong),
            ("traceparent", &traceparent),
        ]))
        .await
        .unwrap()
        .into_inner();
    let (status, headers) = answer(&r);
    assert_eq!(status, 200, "{r:?}");
    assert_eq!(headers["x-stepguard-trace-id"], trace2, "to the upstream");
    let decision2 = headers["x-stepguard-decision-id"].clone();

    // SIGTERM flushes the batch: every span is at the collector once the process exited.
    sg.stop();
    let spans = receiver
        .wait_for(Duration::from_secs(5), |spans| {
            [trace1, trace2].iter().all(|t| {
                spans
                    .iter()
                    .any(|s| s.trace_id == *t && s.name == "stepguard.check")
            })
        })
        .await;

    let check1 = one(&spans, "check span of trace 1", |s| {
        s.trace_id == trace1 && s.name == "stepguard.check"
    });
    assert_eq!(
        check1.parent_span_id, parent1,
        "a child of the caller's span"
    );
    assert_eq!(check1.service, "stepguard-test", "the config's name wins");
    assert_eq!(check1.kind, 2, "SPAN_KIND_SERVER");
    // OTEL_RESOURCE_ATTRIBUTES reaches the resource, beside the version.
    let resource = &check1.resource;
    assert_eq!(resource["k8s.pod.name"], "stepguard-test-0", "{resource:?}");
    assert_eq!(resource["deployment.environment"], "test", "{resource:?}");
    assert_eq!(resource["service.version"], env!("CARGO_PKG_VERSION"));
    let a = &check1.attributes;
    // The gRPC server span's semantic conventions.
    assert_eq!(a["rpc.system"], "grpc", "{a:?}");
    assert_eq!(a["rpc.service"], "envoy.service.auth.v3.Authorization");
    assert_eq!(a["rpc.method"], "Check");
    assert_eq!(a["rpc.grpc.status_code"], "0");
    assert_eq!(a["stepguard.decision_id"], decision1);
    assert_eq!(a["stepguard.decision"], "challenge");
    assert_eq!(a["stepguard.action"], "keys.export");
    assert!(!a["stepguard.reason"].is_empty(), "{a:?}");
    assert!(!a["stepguard.policy_revision"].is_empty(), "{a:?}");
    assert!(a["stepguard.acr.required"].contains("aal3"), "{a:?}");
    assert_eq!(a["stepguard.acr.achieved"], "aal1");
    let stages = children(&spans, check1);
    for stage in [
        "stepguard.classify",
        "stepguard.identify",
        "stepguard.bind",
        "stepguard.grant_lookup",
        "stepguard.policy",
        "stepguard.challenge",
        "stepguard.evidence",
    ] {
        assert!(stages.contains(stage), "{stage} missing: {stages:?}");
    }

    let check2 = one(&spans, "check span of trace 2", |s| {
        s.trace_id == trace2 && s.name == "stepguard.check"
    });
    assert_eq!(check2.parent_span_id, parent2);
    let a = &check2.attributes;
    assert_eq!(a["stepguard.decision_id"], decision2);
    assert_eq!(a["stepguard.decision"], "allow");
    assert_eq!(a["stepguard.acr.achieved"], "aal3");
    let stages = children(&spans, check2);
    for stage in [
        "stepguard.policy",
        "stepguard.consume",
        "stepguard.evidence",
    ] {
        assert!(stages.contains(stage), "{stage} missing: {stages:?}");
    }

    // The evidence record names stepguard's span; the caller's trace.
    for (decision, check) in [(&decision1, check1), (&decision2, check2)] {
        let record = evidence_record(&sg.spool(), decision);
        assert_eq!(record["trace_id"], check.trace_id.as_str(), "{record}");
        assert_eq!(record["span_id"], check.span_id.as_str(), "{record}");
    }

    // Log lines inside the check carry its decision id and trace id (span fields); no token.
    let log = sg.log_text();
    assert!(
        !log.contains(&weak) && !log.contains(&strong[7..]),
        "a token was logged"
    );
    let in_check = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["spans"].as_array().is_some_and(|spans| {
                spans.iter().any(|s| {
                    s["name"] == "stepguard.check"
                        && s["stepguard.decision_id"] == decision1.as_str()
                        && s["trace_id"] == trace1
                })
            })
        })
        .count();
    assert!(
        in_check > 0,
        "no log line of check 1 carries its ids:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_through_envoy_and_stepguard() {
    let receiver = Receiver::start().await;
    let mut sg = Stepguard::start("otlp-envoy", &receiver.endpoint());
    let upstream = EchoUpstream::start();
    let cfg = EnvoyConfig::new(sg.grpc, sg.http, upstream.port());
    let envoy = Envoy::start_with_bootstrap(&cfg, &traced_bootstrap(&cfg, receiver.addr.port()));
    let client = reqwest::Client::new();
    let transfer = |bearer: &str| {
        client
            .post(envoy.url("/v1/accounts/A1/transfers"))
            .header("content-type", "application/json")
            .bearer_auth(bearer)
            .body(TRANSFER)
    };

    // Challenged, then the stronger retry goes through to the upstream. No traceparent from
    // the client: Envoy starts each trace.
    let r = transfer(&token("alice", "aal1", 30)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenged_trace = header(&r, "x-stepguard-trace-id");
    assert_eq!(challenged_trace.len(), 32, "trace id to the client");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = transfer(&token("alice", "aal2", 0)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = upstream.last_request().unwrap();
    let trace = seen["headers"]["x-stepguard-trace-id"]
        .as_str()
        .expect("the upstream got the trace id")
        .to_string();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, challenged_trace, "one trace per request");
    // The upstream's own traceparent (Envoy's router) is in the same trace.
    let upstream_traceparent = seen["headers"]["traceparent"].as_str().unwrap_or_default();
    assert!(
        upstream_traceparent.contains(&trace),
        "upstream traceparent {upstream_traceparent:?} vs {trace}"
    );

    sg.stop();
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            let in_trace = |service: &str| {
                spans
                    .iter()
                    .any(|s| s.trace_id == trace && s.service == service)
            };
            in_trace("envoy-test")
                && in_trace("stepguard-test")
                && spans
                    .iter()
                    .filter(|s| s.trace_id == trace && s.service == "envoy-test")
                    .count()
                    >= 2
        })
        .await;
    let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let envoy_spans: Vec<&Span> = in_trace
        .iter()
        .copied()
        .filter(|s| s.service == "envoy-test")
        .collect();
    assert!(!envoy_spans.is_empty(), "no Envoy span in {spans:#?}");
    let check = one(&spans, "stepguard check span", |s| {
        s.trace_id == trace && s.name == "stepguard.check"
    });
    assert_eq!(check.service, "stepguard-test");
    assert_eq!(check.attributes["stepguard.decision"], "allow");
    let parent = envoy_spans
        .iter()
        .find(|s| s.span_id == check.parent_span_id)
        .unwrap_or_else(|| panic!("the check's parent is no Envoy span: {in_trace:#?}"));
    eprintln!(
        "stepguard.check's parent: Envoy span {:?} (kind {}); Envoy spans in the trace: {:?}",
        parent.name,
        parent.kind,
        envoy_spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    // Envoy's ext_authz call is traced as its own client span; stepguard continues it.
    assert_eq!(
        parent.kind, 3,
        "SPAN_KIND_CLIENT: Envoy's ext_authz gRPC call"
    );
    drop(envoy);
}
