//! A real `redis-server` per test, on a free loopback port, with persistence off; killed (and
//! its directory removed) on drop. `STEPGUARD_REDIS_SERVER` overrides the binary.

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
}

fn binary() -> String {
    std::env::var("STEPGUARD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> RedisServer {
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
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
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
        let mut con = self.client();
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query(&mut con)
                .unwrap();
            for key in keys {
                let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap();
                out.push((key, pttl));
            }
            if next == 0 {
                return out;
            }
            cursor = next;
        }
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
