//! A real `redis-server` per test, on a free loopback port, with persistence off (or an
//! append-only file, [`RedisServer::start_with_aof`]); killed (and its directory removed) on
//! drop. `STEPGUARD_REDIS_SERVER` overrides the binary. Also a local
//! 3-node Redis Cluster ([`RedisCluster`]), built with `redis-cli --cluster create`
//! (`STEPGUARD_REDIS_CLI` overrides that binary). Either can be broken on purpose: `kill -9`,
//! SIGSTOP for a while, restart on the same port.

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
    /// `--appendfsync` of an append-only file in the server's directory; `None`: no AOF.
    aof: Option<String>,
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
        Self::start_in(extra, None)
    }

    /// Starts a server that logs every write to an append-only file in its directory,
    /// `fsync`ed as `--appendfsync` says (`always`, `everysec`); [`RedisServer::restart`] then
    /// starts it again from that file. No snapshots.
    pub fn start_with_aof(fsync: &str) -> RedisServer {
        Self::start_in(&[], Some(fsync.to_string()))
    }

    fn start_in(extra: &[String], aof: Option<String>) -> RedisServer {
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
            aof,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let aof = match &self.aof {
            Some(fsync) => vec!["--appendonly", "yes", "--appendfsync", fsync.as_str()],
            None => vec!["--appendonly", "no"],
        };
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(aof)
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

    /// `kill -9`, then starts the server again on the same port and directory: empty, unless
    /// it keeps an append-only file or was told to `SAVE` a snapshot (either is loaded).
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

    /// `INFO <section>`.
    pub fn info(&self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query(&mut self.client())
            .unwrap()
    }

    /// `CONFIG SET name value`.
    pub fn config_set(&self, name: &str, value: &str) {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut self.client())
            .unwrap();
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

mod cluster;
pub use cluster::{CLUSTER_NODE_TIMEOUT_MS, RedisCluster};
