//! Wiring and serving: config → pipeline → gRPC (Authorization + Health) and HTTP servers (the
//! callback port, and the admin port when `listen.admin` is set) on the given listeners → wait
//! for shutdown → mark not serving → drain in-flight work within the deadline → close the
//! evidence spool and ship what is left of it. Integration tests call the same [`App::serve`]
//! on port-0 listeners.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::evidence::ship::ShipSettings;
use crate::grant::RedisConnection;
use crate::grant_api::GrantApi;
use crate::grpc::CheckService;
use crate::http::Endpoints;
use crate::identity::JwksError;
use crate::oidc::callback::CallbackState;
use crate::oidc::{Oidc, OidcError};
use crate::pipeline::Pipeline;
use crate::policy::{PolicyError, Reloader, Trial};
use crate::proto::grant_service_server::GrantServiceServer;
use crate::ssf::poll::Poller;
use crate::ssf::push::Push;
use crate::txn::TxnError;

mod build;

use build::{grant_api, pipeline, shared_signals};

/// Why the sidecar could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Jwks(#[from] JwksError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("transaction binding: {0}")]
    Txn(#[from] TxnError),
    #[error("grant store: {0}")]
    Grants(#[from] crate::grant::GrantError),
    #[error("OIDC client: {0}")]
    Oidc(#[from] OidcError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Evidence(#[from] crate::evidence::EvidenceError),
    #[error("shared signals: {0}")]
    SharedSignals(String),
}

/// A built sidecar, ready to serve.
pub struct App {
    pipeline: Arc<Pipeline>,
    drain: Duration,
    /// The grant API, when `grant_api` is configured (served on the gRPC listener).
    grant_api: Option<Arc<GrantApi>>,
    /// The step-up IdP's relying party, when `challenge.oidc` is configured (the callback).
    oidc: Option<(String, Arc<Oidc>)>,
    /// Keeps the pipeline's policy current (started by `serve`).
    reloader: Reloader,
    /// With `evidence.stream`: where to ship the spool's last records after it closes.
    final_ship: Option<(ShipSettings, RedisConnection)>,
    /// With `shared_signals.push`: the RFC 8935 endpoint's path and state.
    ssf_push: Option<(String, Push)>,
    /// With `shared_signals.poll`: the RFC 8936 poller (started by `serve`).
    ssf_poll: Option<Poller>,
    /// With `shared_signals.send`: stepguard's SET key set and transmitter metadata.
    ssf_published: Option<crate::ssf::metadata::Published>,
    /// With `transmitter.management`: the SSF stream checks (started by `serve`).
    ssf_stream: Option<crate::ssf::stream::Management>,
}

/// The longest shutdown waits to ship the spool's last records (within the grace period the
/// Kubernetes manifests give: preStop 5 s + drain 5 s + this < 20 s).
const FINAL_SHIP: Duration = Duration::from_secs(5);

impl App {
    /// Builds every component from validated config, with the system clock.
    pub async fn build(config: &Config) -> Result<Self, AppError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Builds with an injected clock (tests).
    pub async fn build_with_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AppError> {
        // Once per process (tests build many apps): metrics are process-wide.
        crate::telemetry::metrics::install();
        let reloader = Reloader::new(
            &config.policy,
            Trial::for_actions(&config.actions, &config.challenge.acr_ladder, clock.clone())?,
        )
        .await?;
        let (pipeline, final_ship) = pipeline(config, clock, &reloader).await?;
        let pipeline = Arc::new(pipeline);
        let oidc = match &config.challenge.oidc {
            Some(oidc_config) => {
                let oidc = Arc::new(Oidc::new(
                    &config.challenge,
                    oidc_config,
                    config.identity.leeway_secs,
                    pipeline.challenger.endpoint(),
                )?);
                // Browsers are sent to the IdP only once it is discovered; until then they get
                // a 503 and API clients their RFC 9470 401 as usual.
                oidc.spawn_discovery();
                let path = config
                    .challenge
                    .callback_path()
                    .unwrap_or("/.stepguard/callback")
                    .to_string();
                Some((path, oidc))
            }
            None => None,
        };
        let grant_api = grant_api(config, &pipeline).await?;
        let (ssf_push, ssf_poll, ssf_stream) = shared_signals(config, &pipeline).await?;
        let ssf_published = config
            .shared_signals
            .as_ref()
            .and_then(|s| s.send.as_ref())
            .zip(pipeline.notifier.as_ref())
            .map(|(send, sender)| crate::ssf::metadata::Published::new(send, sender.jwks()));
        Ok(Self {
            ssf_published,
            ssf_push,
            ssf_poll,
            ssf_stream,
            pipeline,
            drain: Duration::from_millis(config.decision.drain_ms),
            grant_api,
            oidc,
            reloader,
            final_ship,
        })
    }

    /// Makes sure a policy is active: with a bundle server whose first bundle has not arrived,
    /// downloads it once (what `stepguard check` needs before it can decide).
    pub async fn activate_policy(&mut self) -> Result<(), PolicyError> {
        if self.pipeline.policy.is_active() {
            return Ok(());
        }
        match self.reloader.poll().await {
            crate::policy::reload::Reload::Rejected(e) => Err(e),
            _ if self.pipeline.policy.is_active() => Ok(()),
            _ => Err(PolicyError::Load("the bundle server sent no bundle".into())),
        }
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The step-up IdP's relying party, when configured.
    pub fn oidc(&self) -> Option<&Arc<Oidc>> {
        self.oidc.as_ref().map(|(_, oidc)| oidc)
    }

    pub fn into_pipeline(self) -> Arc<Pipeline> {
        self.pipeline
    }

    /// Serves until `shutdown` resolves, then drains within the configured deadline. The HTTP
    /// listener serves the callback and the admin endpoints.
    pub async fn serve(
        self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        self.serve_with_admin(grpc, http, None, shutdown).await
    }

    /// [`App::serve`], with the admin endpoints (`/healthz`, `/readyz`, `/metrics`) on a
    /// listener of their own when `admin` is given (`listen.admin`).
    pub async fn serve_with_admin(
        mut self,
        grpc: TcpListener,
        http: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(poller) = self.ssf_poll.take() {
            poller.spawn(stop_rx.clone());
        }
        if let Some(stream) = self.ssf_stream.take() {
            stream.spawn(stop_rx.clone());
        }
        let ready = Arc::new(AtomicBool::new(true));
        let (health, health_service) = tonic_health::server::health_reporter();
        // Not serving until a policy is active (a bundle server's first bundle), as OPA
        // reports not-ready until its bundles activate. The overall service ("") says the
        // same as Authorization: a health check that asks about "" is not misled either.
        if self.pipeline.policy.is_active() {
            set_authz_health(&health, ServingStatus::Serving).await;
        } else {
            set_authz_health(&health, ServingStatus::NotServing).await;
            spawn_serving_once_active(&self.pipeline, health.clone(), stop_rx.clone());
        }
        tokio::spawn(self.reloader.run(stop_rx.clone()));
        if let Some(api) = &self.grant_api {
            health.set_serving::<GrantServiceServer<GrantApi>>().await;
            api.spawn_jwks_refresh(stop_rx.clone());
        }
        spawn_jwks_refresh(&self.pipeline, stop_rx.clone());
        let grpc_server = Server::builder()
            .add_service(health_service)
            .add_service(AuthorizationServer::new(CheckService::new(
                self.pipeline.clone(),
            )))
            .add_optional_service(self.grant_api.clone().map(GrantServiceServer::from_arc))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            );
        let grpc_task = tokio::spawn(grpc_server);
        let http_state = crate::http::HttpState {
            ready: ready.clone(),
            grants: self.pipeline.grants.clone(),
            policy: self.pipeline.policy.clone(),
            evidence: self.pipeline.evidence.clone(),
            callback: self.oidc.as_ref().map(|(path, oidc)| {
                (
                    path.clone(),
                    CallbackState {
                        oidc: oidc.clone(),
                        completer: self.pipeline.completer.clone(),
                        clock: self.pipeline.clock.clone(),
                        challenge: self.pipeline.challenger.config().clone(),
                    },
                )
            }),
            ssf_push: self.ssf_push.clone(),
            ssf_published: self.ssf_published.clone(),
        };
        let (http_endpoints, admin_task) = match admin {
            Some(admin) => (
                Endpoints::Callback,
                Some(tokio::spawn(crate::http::serve(
                    admin,
                    http_state.clone(),
                    Endpoints::Admin,
                    stopped(stop_rx.clone()),
                ))),
            ),
            None => (Endpoints::All, None),
        };
        let http_task = tokio::spawn(crate::http::serve(
            http,
            http_state,
            http_endpoints,
            stopped(stop_rx),
        ));
        tracing::info!("stepguard serving");
        shutdown.await;
        tracing::info!(drain_ms = self.drain.as_millis() as u64, "shutting down");
        ready.store(false, Ordering::SeqCst);
        set_authz_health(&health, ServingStatus::NotServing).await;
        if self.grant_api.is_some() {
            health
                .set_not_serving::<GrantServiceServer<GrantApi>>()
                .await;
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.drain, async {
            let grpc = grpc_task.await;
            let http = http_task.await;
            let admin = match admin_task {
                Some(task) => task.await,
                None => Ok(Ok(())),
            };
            (grpc, http, admin)
        })
        .await;
        match drained {
            Ok((Ok(grpc), Ok(http), Ok(admin))) => {
                grpc?;
                http?;
                admin?;
            }
            Ok(_) => tracing::error!("a server task failed while draining"),
            Err(_) => tracing::warn!("drain deadline passed; closing remaining connections"),
        }
        // Pending records are written and a shutdown checkpoint closes the chain; then what is
        // not in the Redis Stream yet is shipped, so the spool can go with the pod.
        self.pipeline.evidence.close().await;
        if let Some((settings, conn)) = self.final_ship {
            crate::evidence::ship::drain(settings, conn, &self.pipeline.evidence, FINAL_SHIP).await;
        }
        Ok(())
    }
}

/// Refreshes URL JWKS in the background at their TTL.
fn spawn_jwks_refresh(pipeline: &Arc<Pipeline>, mut stop: watch::Receiver<bool>) {
    let pipeline = pipeline.clone();
    let Some(period) = pipeline.identity.jwks().filter_map(|j| j.ttl()).min() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
            for jwks in pipeline.identity.jwks() {
                if jwks.ttl().is_some() {
                    jwks.refresh(true).await;
                }
            }
        }
    });
}

/// Marks the Authorization service serving once a policy is active, unless shutdown comes
/// first.
fn spawn_serving_once_active(
    pipeline: &Arc<Pipeline>,
    health: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let policy = pipeline.policy.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = policy.activated() => set_authz_health(&health, ServingStatus::Serving).await,
            _ = stop.changed() => {}
        }
    });
}

/// Sets the Authorization service's health, and the overall service's ("") with it.
async fn set_authz_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health
        .set_service_status(
            <AuthorizationServer<CheckService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health.set_service_status("", status).await;
}

/// Resolves when the stop flag is raised.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or_default();
}
