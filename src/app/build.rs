//! Building the parts `App` serves from the configuration: the pipeline (grant store,
//! evidence and its shipping, completions, Shared Signals standing and sending), the grant API,
//! and the Shared Signals receiver (discovery, push, poll, stream management).

use std::sync::Arc;
use std::time::Duration;

use super::AppError;
use crate::challenge::Challenger;
use crate::clock::Clock;
use crate::config::Config;
use crate::evidence::ship::{ShipSettings, Shipper};
use crate::grant::RedisConnection;
use crate::grant_api::GrantApi;
use crate::identity::Identity;
use crate::pipeline::Pipeline;
use crate::policy::Reloader;
use crate::route::RouteTable;
use crate::ssf::deliver::Sender;
use crate::ssf::poll::Poller;
use crate::ssf::push::Push;
use crate::ssf::receiver::Receiver;
use crate::ssf::standing::Standing;
use crate::txn::Binder;

/// The pipeline, and what shutdown needs to ship the spool's last records (with shipping).
type Built = (Pipeline, Option<(ShipSettings, RedisConnection)>);

pub(super) async fn pipeline(
    config: &Config,
    clock: Arc<dyn Clock>,
    reloader: &Reloader,
) -> Result<Built, AppError> {
    let shipping = config.evidence.as_ref().and_then(|e| e.stream.as_ref());
    // The evidence shipper's own connection to the store's Redis, when it ships.
    let (grants, redis) = config
        .grants
        .build_with_side(clock.clone(), shipping.is_some())?;
    let evidence =
        crate::evidence::from_config(config.evidence.as_ref(), &config.policy.entrypoint)?;
    let mut final_ship = None;
    if let (Some(stream), Some(conn), Some(spool)) = (
        shipping,
        redis,
        config.evidence.as_ref().and_then(|e| e.spool.as_ref()),
    ) {
        let settings = ShipSettings::new(spool.dir.clone(), stream);
        tracing::info!(key = %settings.key, "evidence records are shipped to Redis Streams");
        final_ship = Some((settings.clone(), conn.clone()));
        Shipper::new(settings, conn, &evidence).spawn();
    }
    let mut completer = crate::completion::Completer::new(
        grants.clone(),
        evidence.clone(),
        config.challenge.acr_ladder.clone(),
        config.challenge.completion_skew_secs as i64,
    );
    let receiving = config
        .shared_signals
        .as_ref()
        .is_some_and(|s| s.transmitter.is_some());
    if receiving {
        completer = completer.with_shared_signals();
    }
    // Records the challenges issued here that expire unused; stops with the last completer.
    completer.spawn_expiry_sweeper(clock.clone(), Duration::from_secs(1));
    let standing = receiving.then(|| Standing::new(grants.clone()));
    let notifier = match config.shared_signals.as_ref().and_then(|s| s.send.as_ref()) {
        Some(send) => {
            let lowest = config
                .challenge
                .acr_ladder
                .first()
                .map_or("", String::as_str);
            let sender = Sender::start(send, lowest, Some(evidence.clone()))
                .map_err(std::io::Error::other)?;
            tracing::info!(
                receivers = send.receivers.len(),
                "Shared Signals events sent after approvals"
            );
            Some(Arc::new(sender))
        }
        None => None,
    };
    let pipeline = Pipeline {
        routes: RouteTable::new(&config.actions),
        identity: Identity::load(&config.identity, config.jwks_wait()).await?,
        binder: Binder::new(&config.transaction)?,
        context: config.context.clone(),
        completer,
        grants,
        policy: reloader.handle().clone(),
        challenger: Challenger::new(config.challenge.clone()),
        evidence,
        clock,
        budget: Duration::from_millis(config.decision.budget_ms),
        policy_timeout: Duration::from_millis(config.policy.timeout_ms),
        max_segments: config.decision.max_path_segments,
        standing,
        notifier,
    };
    Ok((pipeline, final_ship))
}

/// The grant API, when configured: its own caller identity over the pipeline's store and clock.
pub(super) async fn grant_api(
    config: &Config,
    pipeline: &Pipeline,
) -> Result<Option<Arc<GrantApi>>, AppError> {
    let Some(api) = &config.grant_api else {
        return Ok(None);
    };
    let api = GrantApi::new(
        api,
        config.identity.leeway_secs,
        config.jwks_wait(),
        pipeline.completer.clone(),
        pipeline.clock.clone(),
    )
    .await?;
    tracing::info!("grant API enabled (stepguard.v1.GrantService)");
    Ok(Some(Arc::new(api)))
}

/// The Shared Signals receiver, when configured: the transmitter discovered (a failure refuses
/// to start), its key set loaded, its push endpoint, its poller and the stream management.
pub(super) async fn shared_signals(
    config: &Config,
    pipeline: &Pipeline,
) -> Result<crate::ssf::Receiving, AppError> {
    let Some((ssf, transmitter)) = config
        .shared_signals
        .as_ref()
        .and_then(|s| Some((s, s.transmitter.as_ref()?)))
    else {
        return Ok((None, None, None));
    };
    let (transmitter, stream) = crate::ssf::discovered(transmitter, ssf)
        .await
        .map_err(AppError::SharedSignals)?;
    let transmitter = &transmitter;
    let receiver = Arc::new(
        Receiver::new(
            transmitter,
            ssf,
            &config.challenge.acr_ladder,
            pipeline.grants.clone(),
            pipeline.clock.clone(),
            config.jwks_wait(),
        )
        .await?
        .with_evidence(pipeline.evidence.clone()),
    );
    tracing::info!(transmitter = %transmitter.issuer, "Shared Signals receiver enabled");
    let poller = match &ssf.poll {
        Some(poll) => Some(Poller::new(poll, receiver.clone()).map_err(std::io::Error::other)?),
        None => None,
    };
    let push = match &ssf.push {
        Some(push) => Some((push.path.clone(), Push::new(receiver, push)?)),
        None => None,
    };
    Ok((push, poller, stream))
}
