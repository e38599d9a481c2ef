//! Poll delivery (RFC 8936): stepguard `POST`s to the transmitter's poll endpoint
//! `{"ack": [...], "setErrs": {...}, "maxEvents": N, "returnImmediately": true}` and receives
//! `{"sets": {jti: SET}, "moreAvailable": bool}`. Each SET is received as if pushed; the next poll
//! acknowledges those applied (or already applied: a replay) and reports those refused with
//! their RFC 8935 error; one the store could not record is neither, so it comes again. Polls
//! follow each other at once while `moreAvailable`, else every `interval_ms`; a failing endpoint
//! is retried at that pace, forever, without touching decisions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::config::PollConfig;
use super::receiver::Receiver;
use super::set::SetError;

/// Largest poll response read.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// The poller of one transmitter's endpoint.
pub struct Poller {
    http: reqwest::Client,
    endpoint: String,
    bearer: Option<String>,
    max_events: u32,
    interval: Duration,
    receiver: Arc<Receiver>,
}

/// What one poll left to report on the next: acknowledged `jti`s and refusals.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub ack: Vec<String>,
    pub errors: BTreeMap<String, (String, String)>,
    /// The transmitter has more SETs waiting.
    pub more: bool,
}

impl Poller {
    /// A poller for `config` over `receiver`; the bearer token is read now.
    pub fn new(config: &PollConfig, receiver: Arc<Receiver>) -> Result<Self, String> {
        let bearer = config
            .bearer_token_file
            .as_deref()
            .map(super::read_token)
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            endpoint: config.endpoint.clone(),
            bearer,
            max_events: config.max_events,
            interval: Duration::from_millis(config.interval_ms),
            receiver,
        })
    }

    /// One poll: reports `previous`, receives what comes back; the report for the next poll.
    pub async fn poll_once(&self, previous: &Report) -> Result<Report, String> {
        let errs: Map<String, Value> = previous
            .errors
            .iter()
            .map(|(jti, (err, description))| {
                (jti.clone(), json!({"err": err, "description": description}))
            })
            .collect();
        let mut request = self
            .http
            .post(&self.endpoint)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(
                json!({
                    "ack": previous.ack,
                    "setErrs": errs,
                    "maxEvents": self.max_events,
                    "returnImmediately": true,
                })
                .to_string(),
            );
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("poll endpoint answered {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_RESPONSE_BYTES {
            return Err("poll response too large".into());
        }
        let body = crate::ijson::read(&body, crate::jose::MAX_DEPTH)
            .map_err(|e| format!("poll response: {e:?}"))?
            .value;
        let sets = body
            .get("sets")
            .and_then(Value::as_object)
            .ok_or("poll response without sets")?;
        let mut report = Report {
            more: body.get("moreAvailable").and_then(Value::as_bool) == Some(true),
            ..Report::default()
        };
        for (jti, set) in sets {
            let Some(token) = set.as_str() else {
                report.errors.insert(
                    jti.clone(),
                    (
                        "invalid_request".into(),
                        "a SET is a compact JWS string".into(),
                    ),
                );
                continue;
            };
            match self.receiver.receive(token).await {
                Ok(applied) => {
                    super::applied("poll", &applied);
                    report.ack.push(jti.clone());
                }
                Err(SetError::Replayed) => {
                    super::counted("poll", "replayed");
                    report.ack.push(jti.clone());
                }
                Err(e @ SetError::Unavailable(_)) => {
                    super::counted("poll", e.label());
                    tracing::warn!(jti, error = %e, "security event not recorded; it comes again");
                }
                Err(e) => {
                    super::counted("poll", e.label());
                    tracing::warn!(jti, error = %e, "security event token refused");
                    report
                        .errors
                        .insert(jti.clone(), (e.code().to_string(), e.to_string()));
                }
            }
        }
        Ok(report)
    }

    /// Polls until `stop` is raised.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            let mut report = Report::default();
            loop {
                let wait = match self.poll_once(&report).await {
                    Ok(next) => {
                        let wait = if next.more {
                            Duration::ZERO
                        } else {
                            self.interval
                        };
                        report = next;
                        wait
                    }
                    Err(e) => {
                        tracing::warn!(endpoint = %self.endpoint, error = %e, "SSF poll failed");
                        self.interval
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
