//! Live policy, replaced without a restart. The pipeline reads the [`PolicyHandle`] once per
//! decision ([`PolicyHandle::current`]) and uses that one snapshot for every evaluation of the
//! decision and for the `policy_revision` it records. The [`Reloader`] keeps the handle current:
//! it polls a local source (a content hash of the files [`super::load`] reads) or a bundle
//! server ([`server`]: `If-None-Match`, 304 = unchanged), loads what changed, runs a
//! [`Trial`] evaluation through the output contract, and only then swaps it in. A policy that
//! fails to load or fails its trial is rejected: the previous one keeps serving.
//!
//! With a bundle server there is no policy until the first bundle activates; until then
//! sensitive routes answer 503 `policy_unavailable` and the sidecar reports not ready.

mod server;
mod trial;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use aws_lc_rs::digest;
use tokio::sync::watch;

use super::{PolicyEngine, PolicyError, PolicySource, SourceKind};
use crate::policy::config::PolicyConfig;

pub use server::{BundleClient, Fetched};
pub use trial::Trial;

/// While no policy is active, a bundle server is asked at least this often.
const PENDING_RETRY: Duration = Duration::from_secs(2);

/// The live policy engine, swapped atomically. Empty only while a bundle server's first bundle
/// has not activated.
pub struct PolicyHandle {
    live: ArcSwapOption<Arc<dyn PolicyEngine>>,
    active: watch::Sender<bool>,
}

impl PolicyHandle {
    /// A handle serving `engine`.
    pub fn new(engine: Arc<dyn PolicyEngine>) -> Self {
        let handle = Self::pending();
        handle.activate(engine);
        handle
    }

    /// A handle with no policy yet.
    pub fn pending() -> Self {
        Self {
            live: ArcSwapOption::empty(),
            active: watch::channel(false).0,
        }
    }

    /// The policy to decide with: one snapshot, used for a whole decision.
    pub fn current(&self) -> Option<Arc<dyn PolicyEngine>> {
        self.live
            .load()
            .as_ref()
            .map(|live| Arc::clone(live.as_ref()))
    }

    /// Whether a policy is active.
    pub fn is_active(&self) -> bool {
        *self.active.borrow()
    }

    /// Resolves once a policy is active.
    pub async fn activated(&self) {
        let mut active = self.active.subscribe();
        let _ = active.wait_for(|a| *a).await;
    }

    /// Swaps `engine` in; returns the policy it replaced. Decisions already holding the old
    /// snapshot finish with it.
    pub fn activate(&self, engine: Arc<dyn PolicyEngine>) -> Option<Arc<dyn PolicyEngine>> {
        let previous = self.live.swap(Some(Arc::new(engine.clone())));
        let previous = previous.map(|p| Arc::clone(p.as_ref()));
        publish_info(previous.as_deref(), engine.as_ref());
        self.active.send_replace(true);
        previous
    }
}

/// `stepguard_policy_info{revision,engine}`: 1 for the live policy, 0 for the one it replaced.
fn publish_info(previous: Option<&dyn PolicyEngine>, live: &dyn PolicyEngine) {
    if let Some(p) = previous {
        let labels = [
            ("revision", p.revision().to_string()),
            ("engine", p.engine().into()),
        ];
        metrics::gauge!("stepguard_policy_info", &labels).set(0.0);
    }
    let labels = [
        ("revision", live.revision().to_string()),
        ("engine", live.engine().into()),
    ];
    metrics::gauge!("stepguard_policy_info", &labels).set(1.0);
}

/// Loads `source` and runs its trial: what is swapped in, or why not.
pub fn load_checked(
    source: &PolicySource,
    trial: &Trial,
) -> Result<Arc<dyn PolicyEngine>, PolicyError> {
    let engine = super::load(source)?;
    trial
        .check(engine.as_ref())
        .map_err(|e| PolicyError::Load(format!("trial evaluation: {e}")))?;
    Ok(engine)
}

/// What one poll came to.
#[derive(Debug)]
pub enum Reload {
    /// Nothing changed (or the server answered 304).
    Unchanged,
    /// A new policy is live.
    Activated { revision: String },
    /// The change was rejected (or could not be read); the previous policy keeps serving.
    Rejected(PolicyError),
}

impl Reload {
    fn result(&self) -> &'static str {
        match self {
            Reload::Unchanged => "unchanged",
            Reload::Activated { .. } => "success",
            Reload::Rejected(_) => "failure",
        }
    }
}

/// Where the live policy comes from.
enum Watched {
    /// A local source; `fingerprint` is the content hash last tried (activated or rejected).
    Local {
        source: PolicySource,
        fingerprint: Option<String>,
    },
    /// A bundle server.
    Server {
        client: BundleClient,
        entrypoint: String,
        timeout: Duration,
        fingerprint: Option<String>,
    },
}

/// Keeps a [`PolicyHandle`] current.
pub struct Reloader {
    handle: Arc<PolicyHandle>,
    watched: Watched,
    trial: Arc<Trial>,
    /// `None`: never polled again (a local source with `policy.reload.interval_ms: 0`).
    interval: Option<Duration>,
}

impl Reloader {
    /// Loads a local source now (a failure stops start-up) or prepares the bundle server's
    /// client (its first bundle activates in the background).
    pub async fn new(config: &PolicyConfig, trial: Trial) -> Result<Self, PolicyError> {
        let trial = Arc::new(trial);
        let Some(source) = config.local_source() else {
            let Some(bundle) = &config.bundle else {
                return Err(PolicyError::Load("no policy source configured".into()));
            };
            return Ok(Self {
                handle: Arc::new(PolicyHandle::pending()),
                watched: Watched::Server {
                    client: BundleClient::new(bundle)?,
                    entrypoint: config.entrypoint.clone(),
                    timeout: Duration::from_millis(config.timeout_ms),
                    fingerprint: None,
                },
                trial,
                interval: Some(Duration::from_millis(bundle.interval_ms)),
            });
        };
        let (fingerprint, engine) = off_reactor({
            let (source, trial) = (source.clone(), trial.clone());
            move || {
                let fingerprint = fingerprint(&source)?;
                Ok((fingerprint, load_checked(&source, &trial)?))
            }
        })
        .await?;
        tracing::info!(
            revision = engine.revision(),
            engine = engine.engine(),
            kind = ?SourceKind::of(&source.path),
            "policy loaded"
        );
        let interval = config.reload.interval_ms;
        Ok(Self {
            handle: Arc::new(PolicyHandle::new(engine)),
            watched: Watched::Local {
                source,
                fingerprint: Some(fingerprint),
            },
            trial,
            interval: (interval > 0).then(|| Duration::from_millis(interval)),
        })
    }

    /// The handle this reloader keeps current.
    pub fn handle(&self) -> &Arc<PolicyHandle> {
        &self.handle
    }

    /// Checks the source once and activates what changed (if it passes its trial).
    pub async fn poll(&mut self) -> Reload {
        let reload = match &mut self.watched {
            Watched::Local {
                source,
                fingerprint,
            } => poll_local(source, fingerprint, &self.trial).await,
            Watched::Server {
                client,
                entrypoint,
                timeout,
                fingerprint,
            } => poll_server(client, entrypoint, *timeout, fingerprint, &self.trial).await,
        };
        let reload = match reload {
            Ok(Some(engine)) => self.activate(engine),
            Ok(None) => Reload::Unchanged,
            Err(e) => {
                tracing::error!(error = %e, "policy reload rejected; the previous policy keeps serving");
                Reload::Rejected(e)
            }
        };
        metrics::counter!("stepguard_policy_reloads_total", "result" => reload.result())
            .increment(1);
        reload
    }

    fn activate(&self, engine: Arc<dyn PolicyEngine>) -> Reload {
        let revision = engine.revision().to_string();
        let previous = self.handle.activate(engine.clone());
        tracing::info!(
            revision = %revision,
            previous = previous.as_ref().map(|p| p.revision()),
            engine = engine.engine(),
            "policy activated"
        );
        Reload::Activated { revision }
    }

    /// Polls until `stop` is raised: a bundle server at once, then every interval (more often
    /// while no policy is active).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        if let Some(live) = self.handle.current() {
            // Published again now that a metrics recorder is installed.
            publish_info(None, live.as_ref());
        }
        let Some(period) = self.interval else {
            return;
        };
        let mut first = matches!(self.watched, Watched::Server { .. });
        loop {
            if !first {
                let wait = match self.handle.is_active() {
                    true => period,
                    false => period.min(PENDING_RETRY),
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
            first = false;
            tokio::select! {
                _ = self.poll() => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// The local source's new engine, if its content changed. A change is remembered whether it
/// activates or not, so a broken version is reported once.
async fn poll_local(
    source: &PolicySource,
    last: &mut Option<String>,
    trial: &Arc<Trial>,
) -> Result<Option<Arc<dyn PolicyEngine>>, PolicyError> {
    let (source, seen, trial) = (source.clone(), last.clone(), trial.clone());
    let (fingerprint, engine) = off_reactor(move || {
        let now = fingerprint(&source)?;
        if seen.as_deref() == Some(now.as_str()) {
            return Ok((now, None));
        }
        let engine = load_checked(&source, &trial);
        Ok((now, Some(engine)))
    })
    .await?;
    *last = Some(fingerprint);
    engine.transpose()
}

/// The bundle server's new engine, if it sent a new bundle.
async fn poll_server(
    client: &mut BundleClient,
    entrypoint: &str,
    timeout: Duration,
    last: &mut Option<String>,
    trial: &Arc<Trial>,
) -> Result<Option<Arc<dyn PolicyEngine>>, PolicyError> {
    let bytes = match client.fetch().await? {
        Fetched::NotModified => return Ok(None),
        Fetched::Bundle(bytes) => bytes,
    };
    let fingerprint = hash(&[(client.url(), &bytes)]);
    if last.as_deref() == Some(fingerprint.as_str()) {
        return Ok(None);
    }
    *last = Some(fingerprint);
    let (entrypoint, trial) = (entrypoint.to_string(), trial.clone());
    let engine = off_reactor(move || {
        let engine = super::bundle::load_bytes(&bytes, &entrypoint, timeout)?;
        trial
            .check(engine.as_ref())
            .map_err(|e| PolicyError::Load(format!("trial evaluation: {e}")))?;
        Ok(engine)
    })
    .await?;
    Ok(Some(engine))
}

/// Runs loading work (file reads, compilation) on the blocking pool.
async fn off_reactor<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PolicyError> + Send + 'static,
) -> Result<T, PolicyError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PolicyError::Load(format!("loading task failed: {e}")))?
}

/// A content hash of exactly what [`super::load`] reads for `source`.
pub fn fingerprint(source: &PolicySource) -> Result<String, PolicyError> {
    let mut files = match SourceKind::of(&source.path) {
        SourceKind::Rego => super::rego::source_files(&source.path)?,
        SourceKind::Wasm | SourceKind::Bundle => vec![source.path.clone()],
    };
    files.extend(source.data.iter().cloned());
    let contents = files
        .iter()
        .map(|path| read(path).map(|bytes| (path.to_string_lossy().into_owned(), bytes)))
        .collect::<Result<Vec<_>, _>>()?;
    let parts: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    Ok(hash(&parts))
}

fn read(path: &Path) -> Result<Vec<u8>, PolicyError> {
    std::fs::read(path).map_err(|e| PolicyError::Load(format!("{}: {e}", path.display())))
}

/// A full SHA-256 (hex) over named parts.
fn hash(parts: &[(&str, &[u8])]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for (name, bytes) in parts {
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
