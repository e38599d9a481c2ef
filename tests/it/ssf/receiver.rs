//! A receiver of stepguard's own SETs (an IdP or PAM system's RFC 8935 push endpoint) on a free
//! loopback port: records each delivery (its `Authorization`, `Content-Type` and body) and
//! answers `202 Accepted`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;

use crate::support::transmitter::HttpServer;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

pub struct SetReceiver {
    log: Log,
    server: HttpServer,
}

impl SetReceiver {
    pub fn start() -> SetReceiver {
        let log = Log::default();
        let state = log.clone();
        let server = HttpServer::start(move |_| {
            Router::new()
                .route("/ssf/receive", post(receive))
                .with_state(state)
        });
        SetReceiver { log, server }
    }

    /// Its push endpoint.
    pub fn url(&self) -> String {
        self.server.url("/ssf/receive")
    }

    /// Every delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }
}

async fn receive(State(log): State<Log>, headers: HeaderMap, body: String) -> StatusCode {
    let value = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    log.lock().unwrap().push(Delivery {
        authorization: value(header::AUTHORIZATION),
        content_type: value(header::CONTENT_TYPE),
        body,
    });
    StatusCode::ACCEPTED
}
