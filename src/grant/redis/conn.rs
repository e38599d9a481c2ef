//! How commands reach Redis: [`Conn`], one `ConnectionLike` the store's operations are written
//! against, over a single URL, a Redis Cluster or a Sentinel-managed primary.
//!
//! A connection is never trusted forever: the store replaces it ([`Conn::fresh`]) after a streak
//! of timed-out operations, which is how a black-holed connection (peer gone without a FIN or
//! RST) is left behind instead of waiting for the kernel to give up on it.
//!
//! Every reply, or connection-level error, sets the `stepguard_store_connected{store}` gauge
//! ([`observe`]); the store clears it too when an operation gets no answer within its budget.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, RedisError, RedisFuture, ServerErrorKind, Value,
};

/// Time allowed to open one TCP (and TLS) connection, separate from operation budgets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to the grant store's Redis deployment. Cheap to clone; clones share the
/// underlying connection.
#[derive(Clone)]
pub(super) enum Conn {
    /// One Redis URL, through an auto-reconnecting `ConnectionManager`.
    Single(ConnectionManager, Arc<redis::Client>),
    /// A Redis Cluster. Each command is routed to its slot's primary by the client (`PING` to
    /// a random node). A pipeline is *not* sent as one batch: the client sends a batch to one
    /// node only and refuses one whose keys span slots (our challenge close touches three slots
    /// by design), so the commands of a pipeline are sent one after another, in order, each to
    /// its own slot. Transactions (`MULTI`) are passed through (one slot only).
    Cluster(ClusterConnection),
    /// The primary of a Sentinel-managed set, re-resolved after a failover.
    Sentinel(SentinelConn),
}

impl Conn {
    pub(super) fn single(client: redis::Client) -> Result<Self, RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Each operation's budget is enforced by the store, not by the client.
            .set_response_timeout(None);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Conn::Single(manager, Arc::new(client)))
    }

    pub(super) fn cluster(client: ClusterClient) -> Self {
        let connection = client.get_pending_async_connection_with_config(
            ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT),
        );
        Conn::Cluster(connection)
    }

    pub(super) fn sentinel(client: SentinelClient) -> Self {
        Conn::Sentinel(SentinelConn {
            client: Arc::new(tokio::sync::Mutex::new(client)),
            current: Arc::new(ArcSwapOption::empty()),
        })
    }

    /// A new connection of the same kind to the same deployment; the old one is dropped when
    /// its last in-flight operation ends. `None` for a cluster: its client keeps one
    /// connection per node and times out and reconnects each on its own (a per-node response
    /// timeout is set), while replacing the whole cluster connection because one node hangs
    /// would take the healthy nodes' slots down with it until that node answers again
    /// (measured: a SIGSTOPped node made every transaction fail).
    pub(super) fn fresh(&self) -> Result<Option<Self>, RedisError> {
        Ok(match self {
            Conn::Single(_, client) => Some(Conn::single(client.as_ref().clone())?),
            Conn::Cluster(..) => None,
            Conn::Sentinel(s) => {
                s.current.store(None);
                Some(Conn::Sentinel(s.clone()))
            }
        })
    }

    /// Tells the connection that its server may no longer be the primary (a consume was not
    /// acknowledged by enough replicas: a primary cut off from its replicas, perhaps replaced
    /// by a failover the sentinels know of). A Sentinel connection re-resolves on next use.
    pub(super) fn suspect(&self) {
        if let Conn::Sentinel(s) = self {
            s.current.store(None);
        }
    }

    /// Whether a pipeline's commands may travel to different servers (so a multi-slot
    /// operation must be split per slot).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(..))
    }

    /// The `store` label: the `grants.store` this connection serves.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Conn::Single(..) => "redis",
            Conn::Cluster(..) => "redis_cluster",
            Conn::Sentinel(..) => "redis_sentinel",
        }
    }
}

/// Records whether `reply` came from Redis (connected) or shows the connection is not there
/// (I/O error, refused, dropped, timed out); a server's error reply is an answer too.
fn observe<T>(store: &'static str, reply: Result<T, RedisError>) -> Result<T, RedisError> {
    match &reply {
        Ok(_) => crate::telemetry::metrics::store_connected(store, true),
        Err(e)
            if e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout() =>
        {
            crate::telemetry::metrics::store_connected(store, false)
        }
        Err(_) => crate::telemetry::metrics::store_connected(store, true),
    }
    reply
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let store = self.kind();
        let reply = self.send_command(cmd);
        Box::pin(async move { observe(store, reply.await) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let store = self.kind();
        let replies = self.send_pipeline(pipeline, offset, count);
        Box::pin(async move { observe(store, replies.await) })
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c, _) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(_) => 0,
        }
    }
}

impl Conn {
    fn send_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c, _) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move {
                    let (used, mut c) = s.connection().await?;
                    let reply = c.req_packed_command(cmd).await;
                    s.after(&used, reply)
                })
            }
        }
    }

    fn send_pipeline<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c, _) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move {
                    let (used, mut c) = s.connection().await?;
                    let replies = c.req_packed_commands(pipeline, offset, count).await;
                    s.after(&used, replies)
                })
            }
            Conn::Cluster(c) => {
                let mut c = c.clone();
                Box::pin(async move {
                    if pipeline.is_transaction() {
                        return c.req_packed_commands(pipeline, offset, count).await;
                    }
                    // A non-transactional pipeline's replies are one per command, in order; the
                    // caller asks for `count` of them from `offset` (0 and all of them in practice).
                    let mut replies = Vec::with_capacity(pipeline.len());
                    for cmd in pipeline.cmd_iter().take(offset.saturating_add(count)) {
                        replies.push(c.req_packed_command(cmd).await?);
                    }
                    Ok(replies.into_iter().skip(offset).collect())
                })
            }
        }
    }
}

/// The current primary of a Sentinel-managed set. The `redis` crate resolves the primary
/// through the sentinels (and checks its `ROLE`) when a connection is *made*, but nothing moves
/// a made connection after a failover; this does: a connection is used until an error says it
/// no longer reaches a writable primary, then dropped, and the next operation resolves again.
#[derive(Clone)]
pub(super) struct SentinelConn {
    client: Arc<tokio::sync::Mutex<SentinelClient>>,
    current: Arc<ArcSwapOption<MultiplexedConnection>>,
}

impl SentinelConn {
    /// The current connection, or a new one to the primary the sentinels name now. The
    /// connection is made in a task of its own, so an operation whose budget runs out cannot
    /// cancel it half-way; the next operation finds it ready.
    async fn connection(
        &self,
    ) -> Result<(Arc<MultiplexedConnection>, MultiplexedConnection), RedisError> {
        if let Some(conn) = self.current.load_full() {
            let c = (*conn).clone();
            return Ok((conn, c));
        }
        let client = self.client.clone();
        let current = self.current.clone();
        let made = tokio::spawn(async move {
            let mut client = client.lock().await;
            if let Some(conn) = current.load_full() {
                return Ok(conn);
            }
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(None);
            let conn = Arc::new(client.get_async_connection_with_config(&config).await?);
            current.store(Some(conn.clone()));
            Ok::<_, RedisError>(conn)
        })
        .await
        .map_err(|e| RedisError::from((ErrorKind::Io, "sentinel connect task", e.to_string())))??;
        let c = (*made).clone();
        Ok((made, c))
    }

    /// Drops the connection `used` if `reply` shows it no longer reaches a writable primary
    /// (I/O error, closed connection, `READONLY` from a demoted primary, `MASTERDOWN`).
    fn after<T>(
        &self,
        used: &Arc<MultiplexedConnection>,
        reply: Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        if let Err(e) = &reply {
            let stale = e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error()
                || matches!(
                    e.kind(),
                    ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
                );
            if stale {
                // Only if no other operation has replaced it already.
                self.current.compare_and_swap(&Some(used.clone()), None);
            }
        }
        reply
    }
}
