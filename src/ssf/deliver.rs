//! Delivering stepguard's own SETs (RFC 8935 push) to the configured receivers: one bounded
//! queue and one worker per receiver, retries with exponential backoff (0.5 s doubling to 30 s)
//! up to `max_attempts`, a `4xx` answer final. Nothing here is awaited by a decision.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::config::SendConfig;
use super::send::{About, Notice, Notify, Signer, claims};
use crate::telemetry::metrics::SSF_SENT;

/// The sending side: stepguard's key, its issuer, and a queue per receiver.
pub struct Sender {
    signer: Arc<Signer>,
    issuer: String,
    lowest: String,
    /// Each receiver's audience and queue of claims (signed by its worker, off the decision's
    /// path).
    queues: Vec<(String, mpsc::Sender<Value>)>,
}

/// One receiver's endpoint.
struct Endpoint {
    signer: Arc<Signer>,
    url: String,
    bearer: Option<String>,
    max_attempts: u32,
    http: reqwest::Client,
}

impl Sender {
    /// Loads the key and starts a worker per receiver (inside a Tokio runtime); `lowest` is
    /// the lowest `acr` of the ladder (what an assurance decrease goes down to).
    pub fn start(config: &SendConfig, lowest: &str) -> Result<Self, String> {
        let signer = Arc::new(Signer::load(&config.signing_key_file, &config.key_id)?);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let mut queues = Vec::new();
        for receiver in &config.receivers {
            let bearer = receiver
                .bearer_token_file
                .as_deref()
                .map(super::read_token)
                .transpose()?;
            let (tx, rx) = mpsc::channel(config.queue);
            let endpoint = Endpoint {
                signer: signer.clone(),
                url: receiver.url.clone(),
                bearer,
                max_attempts: config.max_attempts,
                http: http.clone(),
            };
            tokio::spawn(endpoint.work(rx));
            queues.push((receiver.audience.clone(), tx));
        }
        Ok(Self {
            signer,
            issuer: config.issuer.clone(),
            lowest: lowest.to_string(),
            queues,
        })
    }

    /// The published key set.
    pub fn jwks(&self) -> Value {
        self.signer.jwks()
    }

    /// Queues `notify` about `about` after `action` was approved, for every receiver. Never
    /// waits: a full queue drops the SET (counted).
    pub fn notify(&self, notify: Notify, about: &About<'_>, action: &str, now: i64) {
        for (audience, queue) in &self.queues {
            let Some(jti) = crate::random::random_token(16) else {
                counted("rng_unavailable");
                continue;
            };
            let notice = Notice {
                notify,
                about: about.clone(),
                action,
                lowest: &self.lowest,
                now,
            };
            let set = claims(&notice, &self.issuer, audience, &jti);
            if queue.try_send(set).is_err() {
                tracing::warn!(audience, "SET dropped: the receiver's queue is full");
                counted("dropped");
            }
        }
    }
}

impl Endpoint {
    async fn work(self, mut rx: mpsc::Receiver<Value>) {
        while let Some(set) = rx.recv().await {
            match self.signer.sign(&set) {
                Ok(token) => self.deliver(&token).await,
                Err(e) => {
                    tracing::warn!(error = %e, "SET not signed");
                    counted("sign_failed");
                }
            }
        }
    }

    async fn deliver(&self, token: &str) {
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=self.max_attempts {
            let mut request = self
                .http
                .post(&self.url)
                .header("content-type", "application/secevent+jwt")
                .header("accept", "application/json")
                .body(token.to_string());
            if let Some(bearer) = &self.bearer {
                request = request.bearer_auth(bearer);
            }
            match request.send().await {
                Ok(r) if r.status().as_u16() == 202 => {
                    counted("delivered");
                    tracing::info!(url = %self.url, attempt, "SET delivered");
                    return;
                }
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    tracing::warn!(url = %self.url, %status, body = %body.chars().take(200).collect::<String>(), "SET refused by the receiver");
                    counted("refused");
                    return;
                }
                Ok(r) => {
                    tracing::debug!(url = %self.url, status = %r.status(), attempt, "SET delivery failed")
                }
                Err(e) => {
                    tracing::debug!(url = %self.url, error = %e, attempt, "SET delivery failed")
                }
            }
            counted("retried");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        tracing::warn!(url = %self.url, attempts = self.max_attempts, "SET not delivered");
        counted("failed");
    }
}

fn counted(outcome: &'static str) {
    metrics::counter!(SSF_SENT, "outcome" => outcome).increment(1);
}
