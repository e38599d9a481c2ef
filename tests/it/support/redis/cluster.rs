//! A local 3-node Redis Cluster for tests (see the parent module).

use super::*;

/// A local Redis Cluster: 3 primaries, no replicas, on free loopback ports (client and bus port
/// each picked free), persistence off; every node killed (and the directory removed) on drop.
///
/// A node can be killed ([`RedisCluster::kill9`]), stopped for a while ([`RedisCluster::pause`])
/// and started again ([`RedisCluster::restart`]). With no replicas there is no failover: a dead
/// node's slots are unserved until it is back, and it comes back empty.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

/// One cluster node: what it needs to start again as the same node (its ports and the
/// directory holding its `nodes.conf`), and its process while it runs.
struct Node {
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts `redis-server` for this node (joining the cluster again if its `nodes.conf` says
    /// it was a member) and waits (bounded) until it answers PING.
    fn spawn(&mut self) {
        let bin = binary();
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string()])
            .args(["--cluster-port", &self.bus_port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args([
                "--cluster-node-timeout",
                &CLUSTER_NODE_TIMEOUT_MS.to_string(),
            ])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{bin}` (Debian: apt-get install redis-server): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pings(self.port) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("cluster node on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "cluster node on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> String {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("cluster node on port {} is not running", self.port))
            .id()
            .to_string()
    }

    /// `kill -9`, if it runs.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `--cluster-node-timeout`: a node unreachable for longer is flagged failing by the others,
/// and then (no replicas to promote, full coverage required) the whole cluster refuses commands.
/// Outages in the tests stay shorter.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 5000;

impl RedisCluster {
    /// Starts 3 nodes, joins them with `redis-cli --cluster create` and waits (bounded) until
    /// every node reports `cluster_state:ok`.
    pub fn start() -> RedisCluster {
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
            let mut node = Node {
                port,
                bus_port: free_port(),
                dir: node_dir,
                child: None,
            };
            node.spawn();
            cluster.nodes.push(node);
        }
        let output = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")))
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
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// Waits (bounded by `within`) until every node reports `cluster_state:ok`.
    fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for port in self.ports() {
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
                    "cluster node {port} not ok within {within:?}:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `kill -9` node `index`: no shutdown, no goodbye to clients or to the other nodes.
    pub fn kill9(&mut self, index: usize) {
        self.nodes[index].kill9();
    }

    /// SIGSTOP node `index` now, SIGCONT after `secs` (on a thread; join the handle to wait for
    /// it). The process keeps its sockets: clients connect and write, and get no answer.
    pub fn pause(&self, index: usize, secs: f64) -> JoinHandle<()> {
        let pid = self.nodes[index].pid();
        signal("-STOP", &pid);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            signal("-CONT", &pid);
        })
    }

    /// Starts node `index` again (killing it first if it runs) on the same port, bus port and
    /// directory: it rejoins as the same node, owning the same slots, with no data. Waits
    /// (bounded) until every node reports `cluster_state:ok` again.
    pub fn restart(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.kill9();
        node.spawn();
        self.wait_ok(Duration::from_secs(20));
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
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

    /// A client to the first node that is running (not killed; a stopped node would hang it).
    fn any_client(&self) -> redis::Connection {
        let node = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("no cluster node is running");
        node_client(node.port)
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.any_client())
            .unwrap()
    }

    /// The index of the node whose slots include `key`'s (from `CLUSTER SLOTS`, asked of a
    /// running node).
    pub fn node_of(&self, key: &str) -> usize {
        let slot = i64::from(self.keyslot(key));
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.any_client())
            .unwrap();
        for range in ranges {
            // [start, end, [ip, port, id, ...], replicas...]
            let redis::Value::Array(range) = range else {
                panic!("CLUSTER SLOTS entry {range:?}")
            };
            let int = |v: &redis::Value| match v {
                redis::Value::Int(i) => *i,
                other => panic!("CLUSTER SLOTS: not an integer: {other:?}"),
            };
            if !(int(&range[0])..=int(&range[1])).contains(&slot) {
                continue;
            }
            let redis::Value::Array(primary) = &range[2] else {
                panic!("CLUSTER SLOTS primary {:?}", range[2])
            };
            let port = int(&primary[1]);
            return self
                .nodes
                .iter()
                .position(|n| i64::from(n.port) == port)
                .unwrap_or_else(|| panic!("slot {slot} served by unknown port {port}"));
        }
        panic!("slot {slot} of {key} is not served")
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

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                // A stopped process still dies of SIGKILL; CONT anyway so nothing lingers.
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            node.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
