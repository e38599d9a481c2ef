//! An HTTP upstream that echoes what it received, for checking what Envoy
//! (after ext_authz) forwarded to the application.

use std::future::IntoFuture;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri, header};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

#[derive(Debug, Default)]
struct State {
    hits: AtomicUsize,
    requests: Mutex<Vec<Value>>,
}

/// Answers every request with 200 and a JSON body
/// `{"method", "path", "query", "headers": {lowercase name: value}, "body"}`
/// (repeated headers joined with `", "`; `query` is `null` when absent; `body`
/// is the request body as lossy UTF-8), and records each request.
///
/// Runs on its own thread with its own tokio runtime, so it works from plain
/// `#[test]`s and from any flavour of `#[tokio::test]`. Stopped on drop.
#[derive(Debug)]
pub struct EchoUpstream {
    port: u16,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    /// Bind a free port on 127.0.0.1 and start serving.
    pub fn start() -> EchoUpstream {
        // Bind here (port 0) rather than pick-then-bind: no race for the port,
        // and the server is accepting before `start` returns.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo upstream");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let port = listener.local_addr().expect("local_addr").port();

        let state = Arc::new(State::default());
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let app_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("echo-upstream-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("echo upstream runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = Router::new().fallback(move |method, uri, headers, body| {
                        let state = Arc::clone(&app_state);
                        async move { echo(&state, method, uri, headers, body) }
                    });
                    tokio::select! {
                        result = axum::serve(listener, app).into_future() => {
                            if let Err(e) = result {
                                eprintln!("echo upstream on port {port} stopped: {e}");
                            }
                        }
                        _ = shutdown_rx => {}
                    }
                });
                // Dropping the runtime here cancels open keep-alive connections.
            })
            .expect("spawn echo upstream thread");

        EchoUpstream {
            port,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Number of requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Every request received so far, as the JSON objects that were echoed.
    pub fn requests(&self) -> Vec<Value> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The most recent request received, if any.
    pub fn last_request(&self) -> Option<Value> {
        self.requests().pop()
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn echo(
    state: &State,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(HeaderName, &'static str); 1], String) {
    let mut header_map = Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        // `HeaderName`s are already lowercase; keep the guarantee explicit.
        header_map.insert(name.as_str().to_ascii_lowercase(), Value::String(joined));
    }
    let record = json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": header_map,
        "body": String::from_utf8_lossy(&body),
    });
    {
        let mut requests = state
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        requests.push(record.clone());
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        record.to_string(),
    )
}
