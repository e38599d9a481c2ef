//! A real `redis-server` per test, on a free loopback port, with persistence off; killed (and
//! its directory removed) on drop. `STEPGUARD_REDIS_SERVER` overrides the binary. Also a local
//! 3-node Redis Cluster ([`RedisCluster`]), built with `redis-cli --cluster create`
//! (`STEPGUARD_REDIS_CLI` overrides that binary).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ports::free_port;

pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Further `redis-server` arguments (e.g. `--replicaof`).
    extra: Vec<String>,
}

pub(crate) fn binary() -> String {
    std::env::var("STEPGUARD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with further arguments and waits until it answers PING.
    pub fn start_with(extra: &[String]) -> RedisServer {
        let bin = binary();
        if Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            panic!(
                "`{bin}` not found: these tests need a real Redis (Debian: apt-get install \
                 redis-server), or set STEPGUARD_REDIS_SERVER to its path"
            );
        }
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("stepguard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            extra: extra.to_vec(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(&self.extra)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.pings() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    fn pings(&self) -> bool {
        pings(self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("redis-server is not running")
            .id()
    }

    /// `kill -9`: no shutdown, no goodbye to clients.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP now, SIGCONT after `secs` (on a thread; join the handle to wait for it). The
    /// process keeps its sockets: clients connect and write, and get no answer.
    pub fn pause(&self, secs: f64) -> JoinHandle<()> {
        let pid = self.pid().to_string();
        signal("-STOP", &pid);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            signal("-CONT", &pid);
        })
    }

    /// Starts a fresh (empty) server on the same port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// A plain synchronous client, for inspecting what the store wrote.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Every key on the server with its PTTL (SCAN, not KEYS).
    pub fn keys_with_pttl(&self) -> Vec<(String, i64)> {
        scan_pttl(&mut self.client())
    }
}

/// Every key on one server with its PTTL (SCAN, not KEYS).
pub(crate) fn scan_pttl(con: &mut redis::Connection) -> Vec<(String, i64)> {
    let mut cursor = 0u64;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .unwrap();
        for key in keys {
            let pttl: i64 = redis::cmd("PTTL").arg(&key).query(con).unwrap();
            out.push((key, pttl));
        }
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

fn signal(sig: &str, pid: &str) {
    let status = Command::new("kill").args([sig, pid]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid} failed");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process still dies of SIGKILL; CONT anyway so nothing lingers.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local Redis Cluster: 3 primaries, no replicas, on free loopback ports (client and bus port
/// each picked free), persistence off; every node killed (and the directory removed) on drop.
pub struct RedisCluster {
    nodes: Vec<(u16, Child)>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts 3 nodes, joins them with `redis-cli --cluster create` and waits (bounded) until
    /// every node reports `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let bin = binary();
        let cli = std::env::var("STEPGUARD_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into());
        let first = free_port();
        let dir = std::env::temp_dir().join(format!(
            "stepguard-redis-cluster-{}-{first}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        for i in 0..3 {
            let port = if i == 0 { first } else { free_port() };
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new(&bin)
                .args(["--port", &port.to_string()])
                .args(["--cluster-port", &free_port().to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "5000"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--daemonize", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start `{bin}` (Debian: apt-get install redis-server): {e}")
                });
            cluster.nodes.push((port, child));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (port, _) in &cluster.nodes {
            while !pings(*port) {
                assert!(
                    Instant::now() < deadline,
                    "cluster node on port {port} did not answer PING within 10 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let output = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(cluster.nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `{cli}` (it comes with redis-server; or set STEPGUARD_REDIS_CLI): {e}")
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in cluster.ports() {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node_client(port))
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {port} not ok within 20 s:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(p, _)| *p).collect()
    }

    /// `redis://` URLs of every node (what `grants.nodes` lists).
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// A plain synchronous client to one node (no redirections followed).
    pub fn client(&self, port: u16) -> redis::Connection {
        node_client(port)
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut node_client(self.nodes[0].0))
            .unwrap()
    }

    /// Every key on every node, with the node's port and the key's PTTL (SCAN, not KEYS).
    pub fn keys_with_pttl(&self) -> Vec<(u16, String, i64)> {
        self.ports()
            .into_iter()
            .flat_map(|port| {
                scan_pttl(&mut node_client(port))
                    .into_iter()
                    .map(move |(key, pttl)| (port, key, pttl))
            })
            .collect()
    }
}

pub(crate) fn node_client(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("cannot connect to cluster node {port}: {e}"))
}

pub(crate) fn pings(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
