//! A local Sentinel-managed Redis set: one primary, two replicas and three `redis-server
//! --sentinel` processes on free loopback ports, persistence off; everything killed (and the
//! directory removed) on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;
use super::redis::{RedisServer, binary, node_client, pings};

/// The name the sentinels monitor the set under.
pub const MASTER_NAME: &str = "sgprimary";

pub struct SentinelSet {
    /// The three data servers; which one is primary changes with failovers.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<(u16, Child)>,
    dir: PathBuf,
}

impl SentinelSet {
    /// Starts the primary, two replicas of it and three sentinels, and waits (bounded) until
    /// the replicas are in sync and every sentinel knows them and the other sentinels. (Two
    /// replicas: after a failover the new primary has a replica at once, so consumes that
    /// wait for one acknowledgement work again without waiting for the old primary to be
    /// demoted, which Sentinel does only on its next check of it.)
    pub fn start() -> SentinelSet {
        Self::start_with(|primary| primary)
    }

    /// [`SentinelSet::start`], the replicas replicating from the port `link` gives for the
    /// primary's (e.g. a proxy in front of it that can cut them off).
    pub fn start_with(link: impl FnOnce(u16) -> u16) -> SentinelSet {
        let primary = RedisServer::start();
        let replica_of = [
            "--replicaof".to_string(),
            "127.0.0.1".into(),
            link(primary.port()).to_string(),
        ];
        let replicas = [
            RedisServer::start_with(&replica_of),
            RedisServer::start_with(&replica_of),
        ];
        let [a, b] = replicas;
        let first = free_port();
        let dir =
            std::env::temp_dir().join(format!("stepguard-sentinel-{}-{first}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut set = SentinelSet {
            servers: vec![primary, a, b],
            sentinels: Vec::new(),
            dir,
        };
        for replica in &set.servers[1..] {
            wait_until(Duration::from_secs(10), "replica in sync", || {
                info(replica.port(), "replication").contains("master_link_status:up")
            });
        }
        for i in 0..3 {
            let port = if i == 0 { first } else { free_port() };
            // Sentinel rewrites its configuration file: each gets its own, writable.
            let conf = set.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    set.dir.display(),
                    set.servers[0].port()
                ),
            )
            .unwrap();
            let child = Command::new(binary())
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start `{}` --sentinel: {e}", binary()));
            set.sentinels.push((port, child));
        }
        for port in set.sentinel_ports() {
            wait_until(Duration::from_secs(10), "sentinel up", || pings(port));
        }
        wait_until(
            Duration::from_secs(30),
            "sentinels know the replica and each other",
            || {
                set.sentinel_ports().iter().all(|&port| {
                    let master: Vec<String> = redis::cmd("SENTINEL")
                        .arg("MASTER")
                        .arg(MASTER_NAME)
                        .query(&mut node_client(port))
                        .unwrap_or_default();
                    let field = |name: &str| {
                        master
                            .iter()
                            .position(|f| f == name)
                            .and_then(|i| master.get(i + 1))
                            .and_then(|v| v.parse::<u32>().ok())
                            .unwrap_or(0)
                    };
                    field("num-slaves") >= 2 && field("num-other-sentinels") >= 2
                })
            },
        );
        set
    }

    fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(p, _)| *p).collect()
    }

    /// `redis://` URLs of the sentinels (what `grants.sentinels` lists).
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The primary's port, as the first sentinel names it.
    pub fn primary_port(&self) -> u16 {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut node_client(self.sentinels[0].0))
            .unwrap();
        port
    }

    /// A plain synchronous client to one data server.
    pub fn client(&self, port: u16) -> redis::Connection {
        node_client(port)
    }

    /// `SENTINEL FAILOVER`: promotes the replica without waiting for the primary to fail; the
    /// old primary is reconfigured as a replica of the new one.
    pub fn failover(&self) {
        let ok: String = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query(&mut node_client(self.sentinels[0].0))
            .unwrap();
        assert_eq!(ok, "OK");
    }

    /// Waits (bounded) until the sentinels name another primary than `old`, it reports the
    /// role and has a replica in sync; returns its port.
    pub fn wait_for_new_primary(&self, old: u16, within: Duration) -> u16 {
        let mut new = old;
        wait_until(within, "failover completed", || {
            new = self.primary_port();
            let replication = info(new, "replication");
            new != old
                && replication.contains("role:master")
                && !replication.contains("connected_slaves:0")
        });
        new
    }
}

impl SentinelSet {
    /// Waits (bounded) until the server on `port` has `n` replicas online.
    pub fn wait_for_replicas(&self, port: u16, n: usize, within: Duration) {
        wait_until(within, "replicas online", || {
            info(port, "replication")
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .count()
                >= n
        });
    }
}

/// `INFO <section>` of one server.
fn info(port: u16, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query(&mut node_client(port))
        .unwrap_or_default()
}

/// Waits (bounded by `within`) until `ready`; panics naming `what` if it never is.
pub fn wait_until(within: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
