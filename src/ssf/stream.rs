//! Stream management (SSF 1.0 §8.1), when the transmitter's metadata offers a
//! `configuration_endpoint` and `transmitter.management` gives stepguard a bearer token for it.
//! Each check ([`Management::check`]):
//!
//! 1. reads the streams the transmitter holds for this receiver (`GET`), and takes the one
//!    delivering the way stepguard is configured to receive (push to `push.endpoint_url`, or
//!    poll), else the only one;
//! 2. creates it when there is none (`POST`: `delivery` — push `urn:ietf:rfc:8935` with the
//!    public `endpoint_url` and the `authorization_header` the push endpoint expects, or poll
//!    `urn:ietf:rfc:8936` — and `events_requested`, the CAEP and RISC events stepguard acts
//!    on), or updates it (`PATCH`) when its delivery or requested events differ;
//! 3. refuses a stream it cannot fix from here: another `iss`, an `aud` that is none of
//!    `shared_signals.audiences` (its SETs would all be refused), a poll endpoint other than
//!    `shared_signals.poll.endpoint`;
//! 4. warns about the events stepguard acts on that the transmitter does not deliver
//!    (`events_delivered`), reads the stream's status (`status_endpoint`), and asks for a
//!    verification event ([`super::verification`]).
//!
//! Checks run in the background once serving started (the verification event may come by
//! push): a failed one is logged and retried every 30 s, a successful one repeated every
//! `recheck_secs` (0: never). None of it changes decisions: the keys come from discovery, and
//! SETs are received whatever the stream management says.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::config::SharedSignalsConfig;
use super::discovery::{Metadata, POLL, PUSH};
use crate::telemetry::metrics::{SSF_STREAM_ENABLED, SSF_STREAM_UNDELIVERED};
use properties::{Pick, delivery, differs, pick, strings, undelivered, with_stream_id};

/// The event types stepguard acts on: what it requests.
pub const EVENTS: [&str; 8] = [
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
    "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change",
    "https://schemas.openid.net/secevent/caep/event-type/credential-change",
    "https://schemas.openid.net/secevent/caep/event-type/token-claims-change",
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
    "https://schemas.openid.net/secevent/risc/event-type/account-purged",
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise",
    "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked",
];

/// Time allowed for one management request.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Time before a failed check is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// Why a check of the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A management request failed (network, status, size, JSON).
    #[error("SSF stream management, {what}: {message}")]
    Http { what: &'static str, message: String },
    /// The stream does not fit stepguard and cannot be fixed from here.
    #[error("SSF stream {0}")]
    Mismatch(String),
}

fn http(what: &'static str, message: impl Into<String>) -> StreamError {
    StreamError::Http {
        what,
        message: message.into(),
    }
}

/// How stepguard wants its SETs delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// [`PUSH`] or [`POLL`].
    pub method: &'static str,
    /// Push: stepguard's public push URL. Poll: the configured poll endpoint (the
    /// transmitter's).
    pub endpoint: String,
    /// Push: the `Authorization` value the push endpoint expects.
    pub authorization: Option<String>,
}

/// What a check did to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Created,
    Unchanged,
    Updated,
    /// The transmitter accepted the update for later (`202`).
    UpdatePending,
}

/// The stream after a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub stream_id: String,
    pub setup: Setup,
    /// Event types stepguard acts on that the transmitter does not deliver.
    pub undelivered: Vec<String>,
    /// `status` and `reason` from the status endpoint, when offered and answered.
    pub status: Option<(String, Option<String>)>,
    /// The state of the verification event asked for, when one was.
    pub verification: Option<String>,
}

/// Stream management at one transmitter.
pub struct Management {
    http: reqwest::Client,
    token: String,
    issuer: String,
    audiences: Vec<String>,
    configuration: String,
    status: Option<String>,
    verification: Option<String>,
    wanted: Wanted,
    verify: bool,
    recheck: Option<Duration>,
}

impl Management {
    /// Stream management for `config` at the transmitter `metadata` describes; `None` without
    /// `transmitter.management` or a `configuration_endpoint`. Token files are read now.
    pub fn new(config: &SharedSignalsConfig, metadata: &Metadata) -> Result<Option<Self>, String> {
        let Some(transmitter) = &config.transmitter else {
            return Ok(None);
        };
        let Some(management) = &transmitter.management else {
            return Ok(None);
        };
        let Some(configuration) = &metadata.configuration_endpoint else {
            tracing::warn!(
                "transmitter.management is set but the SSF transmitter offers no stream management (no configuration_endpoint)"
            );
            return Ok(None);
        };
        let wanted = match (&config.push, &config.poll) {
            (Some(push), _) => Wanted {
                method: PUSH,
                endpoint: push
                    .endpoint_url
                    .clone()
                    .ok_or("shared_signals.push.endpoint_url is not set")?,
                authorization: match &push.bearer_token_file {
                    Some(path) => Some(format!("Bearer {}", super::read_token(path)?)),
                    None => None,
                },
            },
            (None, Some(poll)) => Wanted {
                method: POLL,
                endpoint: poll.endpoint.clone(),
                authorization: None,
            },
            (None, None) => return Ok(None),
        };
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Some(Self {
            http,
            token: super::read_token(&management.bearer_token_file)?,
            issuer: transmitter.issuer.clone(),
            audiences: config.audiences.clone(),
            configuration: configuration.clone(),
            status: metadata.status_endpoint.clone(),
            verification: metadata.verification_endpoint.clone(),
            wanted,
            verify: management.verify,
            recheck: (management.recheck_secs > 0)
                .then(|| Duration::from_secs(management.recheck_secs)),
        }))
    }

    /// Checks the stream until `stop` is raised: again every 30 s after a failure, every
    /// `recheck_secs` after a success (never with 0).
    pub fn spawn(self, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            loop {
                let wait = match self.check().await {
                    Ok(_) => match self.recheck {
                        Some(recheck) => recheck,
                        None => return,
                    },
                    Err(e) => {
                        tracing::error!(error = %e, retry_in_s = RETRY.as_secs(), "SSF stream check failed");
                        RETRY
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    /// One check: the stream read, created or updated, its status read, a verification asked
    /// for. Only the first part fails the check; the status and verification requests are
    /// logged when they fail.
    pub async fn check(&self) -> Result<Checked, StreamError> {
        let (stream_id, setup, undelivered) = self.ensure().await?;
        tracing::info!(stream_id, setup = ?setup, "SSF stream configured");
        metrics::gauge!(SSF_STREAM_UNDELIVERED).set(undelivered.len() as f64);
        for event in &undelivered {
            tracing::warn!(
                stream_id,
                event,
                "the SSF transmitter does not deliver an event \
                stepguard acts on"
            );
        }
        super::verification::watch(&stream_id, &self.token);
        let status = match self.read_status(&stream_id).await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(error = %e, "SSF stream status not read");
                None
            }
        };
        let verification = match self.request_verification(&stream_id).await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "SSF verification not requested");
                None
            }
        };
        Ok(Checked {
            stream_id,
            setup,
            undelivered,
            status,
            verification,
        })
    }

    /// The stream read, created or updated, then checked: its id, what was done, and the
    /// events stepguard acts on that it does not deliver.
    async fn ensure(&self) -> Result<(String, Setup, Vec<String>), StreamError> {
        let streams = self.list().await?;
        let (config, setup) = match pick(&streams, &self.wanted) {
            Pick::None => match self.create().await? {
                Some(created) => (created, Setup::Created),
                None => (self.created_elsewhere().await?, Setup::Unchanged),
            },
            Pick::One(current) if !differs(current, &self.wanted) => {
                (current.clone(), Setup::Unchanged)
            }
            Pick::One(current) => self.update(current).await?,
            Pick::Ambiguous(n) => {
                return Err(StreamError::Mismatch(format!(
                    "is ambiguous: the transmitter holds {n} streams for this receiver, none \
                     delivering by {} to {}",
                    self.wanted.method, self.wanted.endpoint
                )));
            }
        };
        let stream_id = config
            .get("stream_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| StreamError::Mismatch("has no stream_id".into()))?
            .to_string();
        self.fits(&config, setup)?;
        Ok((stream_id, setup, undelivered(&config)))
    }

    /// The streams held for this receiver (a `404` or an empty list: none).
    async fn list(&self) -> Result<Vec<Value>, StreamError> {
        let what = "reading the stream";
        let (status, body) = self
            .call(what, Method::GET, &self.configuration, None)
            .await?;
        match (status, body) {
            (404, _) => Ok(Vec::new()),
            (200, Value::Array(streams)) => Ok(streams),
            (200, stream @ Value::Object(_)) => Ok(vec![stream]),
            (200, _) => Err(http(what, "not a stream configuration")),
            (status, _) => Err(http(what, format!("status {status}"))),
        }
    }

    /// The receiver-supplied properties stepguard sets.
    fn wanted_properties(&self) -> Value {
        let mut delivery = json!({"method": self.wanted.method});
        if self.wanted.method == PUSH {
            delivery["endpoint_url"] = json!(self.wanted.endpoint);
            if let Some(authorization) = &self.wanted.authorization {
                delivery["authorization_header"] = json!(authorization);
            }
        }
        json!({"delivery": delivery, "events_requested": EVENTS})
    }

    /// The created stream; `None` when the transmitter holds one already (`409`: another
    /// replica created it first).
    async fn create(&self) -> Result<Option<Value>, StreamError> {
        let what = "creating the stream";
        let mut body = self.wanted_properties();
        body["description"] = json!("stepguard");
        let (status, config) = self
            .call(what, Method::POST, &self.configuration, Some(&body))
            .await?;
        match (status, config) {
            (200 | 201, config @ Value::Object(_)) => Ok(Some(config)),
            (409, _) => Ok(None),
            (status, _) => Err(http(what, format!("status {status}"))),
        }
    }

    /// The stream another replica created meanwhile.
    async fn created_elsewhere(&self) -> Result<Value, StreamError> {
        match pick(&self.list().await?, &self.wanted) {
            Pick::One(stream) => Ok(stream.clone()),
            _ => Err(http(
                "creating the stream",
                "status 409, and no stream to read",
            )),
        }
    }

    async fn update(&self, current: &Value) -> Result<(Value, Setup), StreamError> {
        let what = "updating the stream";
        let mut body = self.wanted_properties();
        body["stream_id"] = current.get("stream_id").cloned().unwrap_or(Value::Null);
        let (status, config) = self
            .call(what, Method::PATCH, &self.configuration, Some(&body))
            .await?;
        match (status, config) {
            (200, config @ Value::Object(_)) => Ok((config, Setup::Updated)),
            (202, _) => Ok((current.clone(), Setup::UpdatePending)),
            (status, _) => Err(http(what, format!("status {status}"))),
        }
    }

    /// What cannot be fixed here: another issuer, none of our audiences, another poll endpoint,
    /// another delivery method after an update.
    fn fits(&self, config: &Value, setup: Setup) -> Result<(), StreamError> {
        let mismatch = |m: String| Err(StreamError::Mismatch(m));
        if let Some(iss) = config.get("iss").and_then(Value::as_str)
            && iss != self.issuer
        {
            return mismatch(format!("is issued by {iss:?}, not {:?}", self.issuer));
        }
        if let Some(aud) = config.get("aud") {
            let mut listed = strings(Some(aud)).peekable();
            if listed.peek().is_none() || !listed.any(|a| self.audiences.iter().any(|o| o == a)) {
                return mismatch(format!(
                    "delivers SETs for aud {aud}, none of shared_signals.audiences"
                ));
            }
        }
        let (method, endpoint) = delivery(config);
        if setup != Setup::UpdatePending && method != Some(self.wanted.method) {
            return mismatch(format!(
                "delivers by {method:?}, not {}: the transmitter kept its method",
                self.wanted.method
            ));
        }
        if self.wanted.method == POLL
            && let Some(endpoint) = endpoint.filter(|e| *e != self.wanted.endpoint)
        {
            return mismatch(format!(
                "is polled at {endpoint}: set shared_signals.poll.endpoint to it"
            ));
        }
        Ok(())
    }

    /// The stream's status, when the transmitter offers a status endpoint; logged, and
    /// `stepguard_ssf_stream_enabled` set.
    async fn read_status(
        &self,
        stream_id: &str,
    ) -> Result<Option<(String, Option<String>)>, StreamError> {
        let what = "reading the stream status";
        let Some(endpoint) = &self.status else {
            return Ok(None);
        };
        let url = with_stream_id(endpoint, stream_id).map_err(|e| http(what, e))?;
        let (code, body) = self.call(what, Method::GET, &url, None).await?;
        if code != 200 {
            return Err(http(what, format!("status {code}")));
        }
        let status = body
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| http(what, "no status"))?
            .to_string();
        let reason = body
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        let enabled = status == "enabled";
        metrics::gauge!(SSF_STREAM_ENABLED).set(if enabled { 1.0 } else { 0.0 });
        if enabled {
            tracing::info!(stream_id, status, "SSF stream status");
        } else {
            tracing::warn!(
                stream_id,
                status,
                reason = reason.as_deref().unwrap_or("-"),
                "the SSF stream is not enabled: the transmitter sends no events"
            );
        }
        Ok(Some((status, reason)))
    }

    /// Asks for a verification event with a fresh state, when the transmitter offers it and
    /// `verify` is on; the state asked for (`None` also when the transmitter answers `429`, too
    /// soon after the last one).
    async fn request_verification(&self, stream_id: &str) -> Result<Option<String>, StreamError> {
        let what = "requesting a verification event";
        let Some(endpoint) = self.verification.as_ref().filter(|_| self.verify) else {
            return Ok(None);
        };
        let state = super::verification::state(stream_id)
            .ok_or_else(|| http(what, "no state (random number generator)"))?;
        let body = json!({"stream_id": stream_id, "state": state});
        let (status, _) = self.call(what, Method::POST, endpoint, Some(&body)).await?;
        match status {
            200..=299 => {
                tracing::info!(stream_id, "SSF verification event requested");
                Ok(Some(state))
            }
            429 => {
                tracing::info!(
                    stream_id,
                    "SSF verification not requested: too soon for the \
                    transmitter (min_verification_interval)"
                );
                Ok(None)
            }
            status => Err(http(what, format!("status {status}"))),
        }
    }

    /// One management request with the bearer token ([`request::call`]).
    async fn call(
        &self,
        what: &'static str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), StreamError> {
        request::call(&self.http, &self.token, what, (method, url), body).await
    }
}

mod properties;
mod request;
#[cfg(test)]
pub(crate) mod tests;
