//! `stepguard serve` as deployed: with `listen.admin` the admin endpoints (`/healthz`,
//! `/readyz`, `/metrics`) leave the internet-facing callback port; gRPC health answers
//! NOT_SERVING for the overall service `""` as for the Authorization service until a policy is
//! active; and `serve` without `--config` outside a source checkout says what to pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::envoy::{TempDir, http_get, manifest_dir};
use crate::support::ports::free_port;
use crate::support::sidecar::Sidecar;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const QUICKSTART_LISTEN: &str = "listen:\n  grpc: 127.0.0.1:9191\n  http: 127.0.0.1:9192\n";

/// The real binary on the quickstart config with an admin port; killed on drop.
struct Served {
    child: Child,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn serve_with_admin(grpc: u16, http: u16, admin: u16) -> Served {
    let dir = TempDir::new("admin-port");
    let local = manifest_dir().join("deploy/local");
    let text = std::fs::read_to_string(local.join("stepguard.yaml")).unwrap();
    assert!(
        text.contains(QUICKSTART_LISTEN),
        "quickstart listen section changed"
    );
    let text = text
        .replace(
            QUICKSTART_LISTEN,
            &format!(
                "listen:\n  grpc: 127.0.0.1:{grpc}\n  http: 127.0.0.1:{http}\n  admin: 127.0.0.1:{admin}\n"
            ),
        )
        .replace(
            "dir: stepguard-evidence",
            &format!("dir: {}", dir.path().join("spool").display()),
        );
    // Beside the quickstart, so its relative paths resolve the same way.
    let config = local.join(format!(".test-admin-{}.yaml", std::process::id()));
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("stepguard.log");
    let child = Command::new(env!("CARGO_BIN_EXE_stepguard"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Served {
        child,
        config,
        log,
        _dir: dir,
    }
}

async fn health(grpc_port: u16, service: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_leave_the_callback_port() {
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let served = serve_with_admin(grpc, http, admin);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(admin, "/readyz", Duration::from_millis(200)).map(|r| r.0) != Ok(200) {
        assert!(
            Instant::now() < deadline,
            "the admin port never became ready:\n{}",
            std::fs::read_to_string(&served.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        http_get(admin, "/healthz", Duration::from_secs(2))
            .unwrap()
            .0,
        200
    );
    let (code, metrics) = http_get(admin, "/metrics", Duration::from_secs(2)).unwrap();
    assert_eq!(code, 200);
    for family in [
        "stepguard_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(&format!(
            "stepguard_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    // The callback port serves none of them.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (code, _) = http_get(http, path, Duration::from_secs(2)).unwrap();
        assert_eq!(code, 404, "{path} on the callback port");
    }
    // The quickstart's policy is active: both health names are SERVING.
    assert_eq!(health(grpc, "envoy.service.auth.v3.Authorization").await, 1);
    assert_eq!(health(grpc, "").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_for_any_name_until_a_policy_is_active() {
    // A bundle server nothing listens on: the first bundle never arrives.
    let bundles = free_port();
    let sidecar = Sidecar::start(|t| {
        t.replace(
            "  source: ../../policies\n",
            &format!(
                "  bundle:\n    url: http://127.0.0.1:{bundles}/bundle.tar.gz\n    interval_ms: 1000\n"
            ),
        )
    });
    let grpc = sidecar.grpc.port();
    assert_eq!(
        health(grpc, "envoy.service.auth.v3.Authorization").await,
        2,
        "NOT_SERVING"
    );
    assert_eq!(
        health(grpc, "").await,
        2,
        "the overall service must not say SERVING while Check cannot decide"
    );
    let (code, body) = http_get(sidecar.http.port(), "/readyz", Duration::from_secs(2)).unwrap();
    assert_eq!(code, 503, "{body}");
}

#[test]
fn serve_without_config_outside_a_checkout_says_what_to_pass() {
    let dir = TempDir::new("no-config");
    let output = Command::new(env!("CARGO_BIN_EXE_stepguard"))
        .arg("serve")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no --config given")
            && stderr.contains("deploy/local/stepguard.yaml")
            && stderr.contains("--config /etc/stepguard/config.yaml"),
        "{stderr}"
    );
}
