//! Delivering stepguard's own SETs (RFC 8935 push) to the configured receivers: one bounded
//! queue and one worker per receiver, retries with exponential backoff (0.5 s doubling to 30 s)
//! up to `max_attempts`, a `4xx` answer final. Nothing here is awaited by a decision. How each
//! SET's delivery ended is recorded as evidence (`signal_sent`) and counted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::config::SendConfig;
use super::send::{About, Notice, Notify, Signer, claims};
use crate::evidence::{Evidence, Lifecycle, Signal};
use crate::telemetry::metrics::SSF_SENT;

/// The sending side: stepguard's key, its issuer, and a queue per receiver.
pub struct Sender {
    signer: Arc<Signer>,
    issuer: String,
    lowest: String,
    /// Each receiver's audience and queue of claims (signed by its worker, off the decision's
    /// path).
    queues: Vec<(String, mpsc::Sender<Queued>)>,
    evidence: Option<Arc<dyn Evidence>>,
}

/// A SET waiting for its receiver: its claims, and the action whose approval it follows.
struct Queued {
    set: Value,
    action: String,
}

/// One receiver's endpoint.
struct Endpoint {
    signer: Arc<Signer>,
    url: String,
    bearer: Option<String>,
    max_attempts: u32,
    http: reqwest::Client,
    audience: String,
    evidence: Option<Arc<dyn Evidence>>,
}

impl Sender {
    /// Loads the key and starts a worker per receiver (inside a Tokio runtime); `lowest` is
    /// the lowest `acr` of the ladder (what an assurance decrease goes down to); each SET's
    /// delivery is recorded in `evidence`.
    pub fn start(
        config: &SendConfig,
        lowest: &str,
        evidence: Option<Arc<dyn Evidence>>,
    ) -> Result<Self, String> {
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
                audience: receiver.audience.clone(),
                evidence: evidence.clone(),
            };
            tokio::spawn(endpoint.work(rx));
            queues.push((receiver.audience.clone(), tx));
        }
        Ok(Self {
            signer,
            issuer: config.issuer.clone(),
            lowest: lowest.to_string(),
            queues,
            evidence,
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
            let queued = Queued {
                set,
                action: action.to_string(),
            };
            if let Err(e) = queue.try_send(queued) {
                tracing::warn!(audience, "SET dropped: the receiver's queue is full");
                counted("dropped");
                let queued = e.into_inner();
                let evidence = self.evidence.clone();
                let audience = audience.clone();
                tokio::spawn(async move {
                    record(evidence.as_deref(), &queued, &audience, "dropped", 0).await;
                });
            }
        }
    }
}

impl Endpoint {
    async fn work(self, mut rx: mpsc::Receiver<Queued>) {
        while let Some(queued) = rx.recv().await {
            let (outcome, attempts) = match self.signer.sign(&queued.set) {
                Ok(token) => self.deliver(&token).await,
                Err(e) => {
                    tracing::warn!(error = %e, "SET not signed");
                    counted("sign_failed");
                    ("sign_failed", 0)
                }
            };
            let evidence = self.evidence.as_deref();
            record(evidence, &queued, &self.audience, outcome, attempts).await;
        }
    }

    /// Delivers `token`: how it ended, after how many attempts.
    async fn deliver(&self, token: &str) -> (&'static str, u32) {
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
                    return ("delivered", attempt);
                }
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    tracing::warn!(url = %self.url, %status, body = %body.chars().take(200).collect::<String>(), "SET refused by the receiver");
                    counted("refused");
                    return ("refused", attempt);
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
        ("failed", self.max_attempts)
    }
}

/// Records how a SET's delivery ended. A record that cannot be written is logged: the approval
/// it follows was recorded already, and delivery never changes it.
async fn record(
    evidence: Option<&dyn Evidence>,
    queued: &Queued,
    audience: &str,
    outcome: &str,
    attempts: u32,
) {
    let Some(evidence) = evidence else { return };
    let set = &queued.set;
    let text = |key: &str| set.get(key).and_then(Value::as_str).unwrap_or_default();
    let event_type = set
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.keys().next())
        .map_or("", String::as_str);
    let sub_id = set.get("sub_id").unwrap_or(&Value::Null);
    let user_of = |v: &Value| {
        Some(format!(
            "{}|{}",
            v.get("iss")?.as_str()?,
            v.get("sub")?.as_str()?
        ))
    };
    let user = user_of(sub_id).or_else(|| user_of(sub_id.get("user")?));
    let signal = Signal {
        issuer: text("iss"),
        jti: text("jti"),
        event_type,
        time: set.get("iat").and_then(Value::as_i64).unwrap_or_default(),
        subject: sub_id,
        user: user.as_deref(),
    };
    let event = Lifecycle::SignalSent {
        signal,
        action: &queued.action,
        audience,
        outcome,
        attempts,
    };
    if let Err(e) = evidence.lifecycle(&event).await {
        tracing::warn!(error = %e, outcome, "the delivery of a SET was not recorded");
    }
}

fn counted(outcome: &'static str) {
    metrics::counter!(SSF_SENT, "outcome" => outcome).increment(1);
}

#[cfg(test)]
pub(crate) mod tests;
