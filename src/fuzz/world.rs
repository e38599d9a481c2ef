//! What the harnesses decide with, built once per process: the quickstart config
//! (`deploy/local/stepguard.yaml`, its shipped Rego policy, dev JWKS and transaction key) as a
//! real [`Pipeline`] over a [`MemoryStore`] that is emptied before every input (each input is
//! decided alone, so a replayed corpus file gives the fuzzer's outcome), evidence that keeps the
//! ids of the decisions it recorded, a manual clock at [`NOW`], and the dev signing key for
//! minting tokens the fuzzer describes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::challenge::Challenger;
use crate::clock::{Clock, ManualClock};
use crate::completion::Completer;
use crate::config::Config;
use crate::evidence::{Evidence, EvidenceContext, EvidenceError, Lifecycle};
use crate::grant::{
    Admitted, Caps, Challenge, ChallengeRef, Counter, Grant, GrantError, GrantStore, MemoryStore,
    Revoke, Tally,
};
use crate::identity::Identity;
use crate::pipeline::Pipeline;
use crate::route::RouteTable;
use crate::txn::Binder;

pub use crate::testkit::{DIR, ISSUER};
/// The harnesses' time (unix seconds).
pub const NOW: i64 = 1_800_000_000;

/// The quickstart config text, edited: no evidence section (no spool is written; the harness's
/// own [`Recorded`] evidence is used) and `edit` applied.
pub fn quickstart_text(edit: impl Fn(String) -> String) -> String {
    let text = std::fs::read_to_string(format!("{DIR}/stepguard.yaml"))
        .unwrap_or_else(|e| panic!("fuzz setup: reading the quickstart config: {e}"));
    let text = match text.find("\n# Decision evidence") {
        Some(at) => text[..at + 1].to_string(),
        None => text,
    };
    edit(text)
}

/// Parses config text against the quickstart's directory; a setup failure is loud.
pub fn parse(text: &str) -> Config {
    Config::parse(text, Path::new(DIR))
        .unwrap_or_else(|e| panic!("fuzz setup: the quickstart config: {e}"))
}

/// A decision pipeline and what the invariants look at.
pub struct World {
    pub pipeline: Pipeline,
    pub store: Arc<Fresh>,
    pub evidence: Arc<Recorded>,
    pub config: Config,
}

impl World {
    /// Builds the pipeline of `config` (on the caller's runtime), as the app does, but with the
    /// harness's store, evidence and clock.
    pub async fn build(config: Config) -> World {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW));
        let app = crate::app::App::build_with_clock(&config, clock.clone())
            .await
            .unwrap_or_else(|e| panic!("fuzz setup: building the app: {e}"));
        let store = Arc::new(Fresh::default());
        let evidence = Arc::new(Recorded::default());
        let grants: Arc<dyn GrantStore> = store.clone();
        let ev: Arc<dyn Evidence> = evidence.clone();
        let identity = Identity::load(&config.identity, config.jwks_wait())
            .await
            .unwrap_or_else(|e| panic!("fuzz setup: identity: {e}"));
        let binder =
            Binder::new(&config.transaction).unwrap_or_else(|e| panic!("fuzz setup: binder: {e}"));
        let pipeline = Pipeline {
            routes: RouteTable::new(&config.actions),
            identity,
            binder,
            grants: grants.clone(),
            policy: app.pipeline().policy.clone(),
            challenger: Challenger::new(config.challenge.clone()),
            completer: Completer::new(grants, ev.clone(), config.challenge.acr_ladder.clone(), 5),
            context: config.context.clone(),
            evidence: ev,
            clock,
            budget: Duration::from_millis(config.decision.budget_ms),
            policy_timeout: Duration::from_millis(config.policy.timeout_ms),
            max_segments: config.decision.max_path_segments,
            standing: None,
            notifier: None,
        };
        World {
            pipeline,
            store,
            evidence,
            config,
        }
    }

    /// Forgets every grant, challenge, counter and evidence record.
    pub fn reset(&self) {
        self.store.reset();
        self.evidence.reset();
    }
}

/// A current-thread runtime with time and I/O, for one harness's process.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("fuzz setup: tokio runtime: {e}"))
}

/// Signs a header and claims given as JSON text, as written, with the dev ES256 key (the test
/// kit's signer).
pub fn sign_text(header: &str, claims: &str) -> Option<String> {
    Some(crate::testkit::sign_text(header, claims))
}

/// The header of the dev key's tokens.
pub const HEADER: &str = r#"{"alg":"ES256","kid":"dev-es256-1","typ":"JWT"}"#;

/// A token of the dev IdP for `sub`, who authenticated at `acr` `age` seconds before [`NOW`].
pub fn token(sub: &str, acr: &str, age: i64) -> Option<String> {
    Some(crate::testkit::token(sub, acr, NOW, age))
}

/// Evidence that keeps the ids of the decisions it recorded.
#[derive(Default)]
pub struct Recorded(Mutex<Vec<String>>);

impl Recorded {
    pub fn has(&self, decision_id: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|ids| ids.iter().any(|id| id == decision_id))
    }

    fn reset(&self) {
        if let Ok(mut ids) = self.0.lock() {
            ids.clear();
        }
    }
}

#[tonic::async_trait]
impl Evidence for Recorded {
    async fn record(&self, ctx: &EvidenceContext<'_>) -> Result<(), EvidenceError> {
        if let Ok(mut ids) = self.0.lock() {
            ids.push(ctx.decision.id.clone());
        }
        Ok(())
    }
    async fn lifecycle(&self, _: &Lifecycle<'_>) -> Result<(), EvidenceError> {
        Ok(())
    }
}

/// A [`MemoryStore`] replaced by an empty one on [`Fresh::reset`].
pub struct Fresh(Mutex<Arc<MemoryStore>>);

impl Default for Fresh {
    fn default() -> Self {
        Self(Mutex::new(Arc::new(MemoryStore::new(100_000))))
    }
}

impl Fresh {
    fn reset(&self) {
        if let Ok(mut inner) = self.0.lock() {
            *inner = Arc::new(MemoryStore::new(100_000));
        }
    }

    /// The current store (a poisoned lock, impossible here, gives an empty one).
    pub fn inner(&self) -> Arc<MemoryStore> {
        self.0
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| Arc::new(MemoryStore::new(1)))
    }
}

#[tonic::async_trait]
impl GrantStore for Fresh {
    async fn put_grant(&self, grant: Grant) -> Result<(), GrantError> {
        self.inner().put_grant(grant).await
    }
    async fn find_grant(&self, digest: &str, now: i64) -> Result<Option<Grant>, GrantError> {
        self.inner().find_grant(digest, now).await
    }
    async fn consume(&self, grant: &Grant, now: i64) -> Result<bool, GrantError> {
        self.inner().consume(grant, now).await
    }
    async fn revoke(&self, which: Revoke<'_>) -> Result<u32, GrantError> {
        self.inner().revoke(which).await
    }
    async fn admit_challenge(
        &self,
        challenge: Challenge,
        caps: &Caps,
        now: i64,
    ) -> Result<Admitted, GrantError> {
        self.inner().admit_challenge(challenge, caps, now).await
    }
    async fn find_challenge(
        &self,
        which: ChallengeRef<'_>,
        now: i64,
    ) -> Result<Option<Challenge>, GrantError> {
        self.inner().find_challenge(which, now).await
    }
    async fn close_challenge(&self, challenge: &Challenge) -> Result<bool, GrantError> {
        self.inner().close_challenge(challenge).await
    }
    async fn tally(
        &self,
        counters: &[Counter<'_>],
        marks: &[&str],
        now: i64,
    ) -> Result<Tally, GrantError> {
        self.inner().tally(counters, marks, now).await
    }
    async fn remember(&self, mark: &str, until: i64, now: i64) -> Result<(), GrantError> {
        self.inner().remember(mark, until, now).await
    }
    async fn claim_once(&self, event: &str, until: i64, now: i64) -> Result<bool, GrantError> {
        self.inner().claim_once(event, until, now).await
    }
    async fn append(
        &self,
        name: &str,
        entry: &str,
        until: i64,
        now: i64,
    ) -> Result<(), GrantError> {
        self.inner().append(name, entry, until, now).await
    }
    async fn journals(&self, names: &[&str], now: i64) -> Result<Vec<Vec<String>>, GrantError> {
        self.inner().journals(names, now).await
    }
}

/// Whether `signature` is the dev key's ES256 signature of `message` (checked with the JWT
/// library and the public key of `dev-jwks.json`, not through the identity module).
pub fn verify_dev_signature(message: &str, signature: &str) -> bool {
    static KEY: std::sync::OnceLock<Option<jsonwebtoken::DecodingKey>> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let text = std::fs::read_to_string(format!("{DIR}/dev-jwks.json")).ok()?;
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text).ok()?;
        let jwk = set.find("dev-es256-1")?;
        jsonwebtoken::DecodingKey::from_jwk(jwk).ok()
    });
    key.as_ref().is_some_and(|key| {
        jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            key,
            jsonwebtoken::Algorithm::ES256,
        )
        .unwrap_or(false)
    })
}
