//! stepguard itself, in-process: the production `App::serve` on port-0 listeners, on its own
//! runtime thread so sync and async tests can both use it.

use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;

use stepguard::app::App;
use stepguard::config::Config;
use tokio::sync::oneshot;

/// A running sidecar; stopped (drained) on drop.
pub struct Sidecar {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The quickstart config with `edit` applied to its text, resolved against deploy/local.
pub use stepguard::testkit::config as quickstart;

impl Sidecar {
    /// Starts the quickstart sidecar (config edited by `edit`).
    pub fn start(edit: impl Fn(String) -> String) -> Sidecar {
        Self::start_with(quickstart(edit))
    }

    pub fn start_with(config: Config) -> Sidecar {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx
                    .send((grpc.local_addr().unwrap(), http.local_addr().unwrap()))
                    .unwrap();
                let app = App::build(&config).await.unwrap();
                app.serve(grpc, http, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let (grpc, http) = addr_rx.recv().unwrap();
        let sidecar = Sidecar {
            grpc,
            http,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        sidecar.wait_ready();
        sidecar
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(self.grpc).is_ok()
                && std::net::TcpStream::connect(self.http).is_ok()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("sidecar did not start listening");
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Stops the sidecar and waits for it to drain.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The quickstart's grants section, which tests replace.
const MEMORY_GRANTS: &str = "grants:\n  store: memory\n  max_entries: 100000\n";

/// A config edit replacing the quickstart's grants section with `section`.
pub fn with_grants(section: String) -> impl Fn(String) -> String {
    move |text: String| {
        assert!(
            text.contains(MEMORY_GRANTS),
            "quickstart grants section changed"
        );
        text.replace(MEMORY_GRANTS, &section)
    }
}

/// A config edit for a Redis grant store at `url` with a `timeout_ms` budget.
pub fn with_redis(url: &str, timeout_ms: u64) -> impl Fn(String) -> String {
    with_grants(format!(
        "grants:\n  store: redis\n  url: {url}\n  timeout_ms: {timeout_ms}\n"
    ))
}

/// The quickstart with its grants section replaced, parsed and validated.
pub fn parse_grants(section: &str) -> Result<Config, stepguard::config::ConfigError> {
    let text = stepguard::testkit::config::quickstart_text();
    Config::parse(
        &with_grants(section.to_string())(text),
        Path::new(stepguard::testkit::DIR),
    )
}

/// The field a validation error names.
pub fn invalid_field(r: Result<Config, stepguard::config::ConfigError>) -> String {
    match r {
        Err(stepguard::config::ConfigError::Invalid { field, .. }) => field,
        Err(e) => panic!("not a validation error: {e}"),
        Ok(_) => panic!("accepted"),
    }
}
