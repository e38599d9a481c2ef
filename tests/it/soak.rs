//! The soak (`scripts/soak`; not part of a plain `cargo test`: `#[ignore]`d). For `SOAK_SECS`
//! (default 900) the real `stepguard serve` binary (the one Cargo built: debug under
//! `cargo test`) runs behind real Envoy with a real Redis grant store (append-only file,
//! `everysec`), evidence spooled (`delete_oldest` at a 4 MiB cap) and shipped to a Redis Stream,
//! under mixed load from loopback clients:
//!
//! - public pages (must pass), session approvals (small transfers on fresh `aal2` sessions),
//!   weak sessions (`aal1`: never approved), and RFC 9470 step-ups (a large transfer is
//!   challenged, the retry with a new sign-in is approved once, a replay is not);
//! - every 30 s a challenge storm (many weak requests at once), every 45 s a policy reload
//!   (a changed `data.json`), every 60 s Redis killed (`kill -9`) and restarted 2 s later.
//!
//! Subjects come from a fixed pool, as users do. Every 5 s the sidecar's RSS and open files,
//! Redis's key count and the spool's size are sampled. Pass criteria, printed and asserted at
//! the end (warm-up: the first third, at least 60 s or half; the rest split in halves A and B):
//!
//! - flat: RSS max(B) ≤ max(A) + max(10 %, 8 MiB) (runs under 5 min: max(25 %, 32 MiB));
//!   open files max(B) ≤ max(A) + 16; Redis keys living ≤ 600 s max(B) ≤ 1.25 max(A) + 100,
//!   longer-lived ones (first-use claims, known networks) ≤ stepped-up requests plus 2 per
//!   subject plus 100, and no key without a TTL but the evidence streams; spool bytes ≤ its cap
//!   and max(B) ≤ max(A) + one segment;
//! - zero approvals without a satisfying session or grant, checked against the evidence
//!   records as they are written (`support::evidence_tail`), no record missed, and every
//!   approval a client saw among them; no client ever got a 200 it should not have;
//! - `stepguard audit verify` passes on the spool after a clean stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::binary::{Served, config_text, evidence_key, evidence_public_key};
use crate::support::envoy::{Envoy, EnvoyConfig, TempDir, manifest_dir};
use crate::support::evidence_tail::Tail;
use crate::support::redis::RedisServer;
use crate::support::tokens::{claims, now, sign};
use crate::support::upstream::EchoUpstream;
use serde_json::{Value, json};

const SEGMENT: u64 = 512 * 1024;
const CAP: u64 = 4 * 1024 * 1024;
const SUBJECTS: u64 = 400;
const WORKERS: u64 = 4;

/// The soak's config: Redis store, short challenge lifetime and limits a storm reaches, the
/// policy from `policies` reloaded every 500 ms, a capped spool shipped to a stream.
fn config(redis: &str, policies: &Path, spool: &Path, grpc: u16, http: u16) -> String {
    let evidence = format!(
        "evidence:\n  spool:\n    dir: {}\n    segment_bytes: {SEGMENT}\n    max_bytes: {CAP}\n    \
         when_full: delete_oldest\n  signing_key_file: {}\n  stream:\n    key: soak:evidence\n    \
         max_len: 5000\n    poll_ms: 50\n    batch: 500\n",
        spool.display(),
        evidence_key().display()
    );
    let shipped = format!("source: {}/policies", manifest_dir().display());
    let mut text = config_text(grpc, http, &evidence);
    for (from, to) in [
        (
            "grants:\n  store: memory\n  max_entries: 100000\n".to_string(),
            format!("grants:\n  store: redis\n  url: {redis}\n  timeout_ms: 100\n"),
        ),
        (
            "  ttl_secs: 300\n".into(),
            "  ttl_secs: 30\n  limits:\n    per_subject: {max: 10, window_secs: 10}\n    \
             per_source_ip: {max: 1000000, window_secs: 10}\n    max_open_per_subject: 5\n    \
             max_attempts_per_transaction: 5\n"
                .into(),
        ),
        (shipped, format!("source: {}", policies.display())),
        (
            "  timeout_ms: 100\n\ngrants".into(),
            "  timeout_ms: 100\n  reload:\n    interval_ms: 500\n\ngrants".into(),
        ),
        (
            "telemetry:\n  log_format: json\n  log_level: info\n".into(),
            "telemetry:\n  log_format: json\n  log_level: warn\n\ncontext:\n  \
             velocity_window_secs: 10\n  remember_networks_days: 1\n"
                .into(),
        ),
    ] {
        assert!(text.contains(&from), "the quickstart has `{from}`");
        text = text.replace(&from, &to);
    }
    text
}

/// A token for `sub` at `acr`, signed in at `auth_time`, valid 60 s (so what the store keeps
/// for it — a claimed sign-in — lives about as long).
fn token_at(sub: &str, acr: &str, auth_time: i64) -> String {
    let mut c = claims(sub, acr, 0);
    c["auth_time"] = json!(auth_time);
    c["exp"] = json!(now() + 60);
    sign(&c)
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// (kind, status) → count.
    answers: BTreeMap<(&'static str, u16), u64>,
    /// Decision ids of the approvals a client saw.
    approvals: Vec<String>,
    /// 200s that must not have been.
    wrong: Vec<String>,
    transport_errors: u64,
}

struct Client {
    http: reqwest::Client,
    base: String,
    seen: Arc<Mutex<Seen>>,
}

impl Client {
    /// A transfer of `amount` with `token`: the status, and the decision id of an approval.
    async fn transfer(&self, kind: &'static str, token: &str, amount: u64) -> Option<u16> {
        let body = json!({"amount": amount, "currency": "EUR", "payee": "bob"}).to_string();
        let r = self
            .http
            .post(format!("{}/v1/accounts/A1/transfers", self.base))
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body(body)
            .send()
            .await;
        self.note(kind, r).await
    }

    async fn public(&self) -> Option<u16> {
        let r = self
            .http
            .get(format!("{}/public/hello", self.base))
            .send()
            .await;
        self.note("public", r).await
    }

    async fn note(&self, kind: &'static str, r: reqwest::Result<reqwest::Response>) -> Option<u16> {
        let Ok(r) = r else {
            self.seen.lock().unwrap().transport_errors += 1;
            return None;
        };
        let status = r.status().as_u16();
        let body: Value = match status {
            200 => {
                let text = r.text().await.unwrap_or_default();
                serde_json::from_str(&text).unwrap_or(Value::Null)
            }
            _ => Value::Null,
        };
        let mut seen = self.seen.lock().unwrap();
        *seen.answers.entry((kind, status)).or_default() += 1;
        if status == 200 && kind != "public" {
            match body["headers"]["x-stepguard-decision-id"].as_str() {
                Some(id) => seen.approvals.push(id.to_string()),
                None => seen
                    .wrong
                    .push(format!("{kind}: 200 without a decision id")),
            }
            if matches!(kind, "weak" | "challenge" | "replay" | "storm") {
                seen.wrong.push(format!("{kind}: approved"));
            }
        }
        Some(status)
    }
}

/// One worker's mix, until `stop`.
async fn work(client: Arc<Client>, w: u64, stop: Arc<AtomicBool>, flows: Arc<AtomicU64>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sub = format!("soak-{}", (w * 7919 + n * 104_729) % SUBJECTS);
        match n % 8 {
            0 | 4 => {
                client.public().await;
            }
            1 | 3 | 5 => {
                let t = token_at(&sub, "aal2", now() - 5);
                client.transfer("session", &t, 1 + (n % 900)).await;
            }
            2 => {
                let t = token_at(&sub, "aal1", now() - 60);
                client.transfer("weak", &t, 1 + (n % 900)).await;
            }
            _ => {
                // An RFC 9470 step-up on a transaction of its own.
                let amount = 1000 + flows.fetch_add(1, Ordering::Relaxed);
                let weak = token_at(&sub, "aal2", now() - 60);
                if client.transfer("challenge", &weak, amount).await != Some(401) {
                    continue;
                }
                let stepped = token_at(&sub, "aal2", now());
                if client.transfer("stepped_up", &stepped, amount).await == Some(200) {
                    client.transfer("replay", &stepped, amount).await;
                }
            }
        }
    }
}

/// Many weak requests at once from a few subjects: challenges, then 429s.
async fn storm(client: Arc<Client>, round: u64) {
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let sub = format!("soak-{}", (round * 31 + i) % SUBJECTS);
                for k in 0..10 {
                    let t = token_at(&sub, "aal1", now() - 60);
                    client.transfer("storm", &t, 2000 + k).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Rewrites `data.json` with a new generation: a new policy revision to reload.
fn reload(policies: &Path, generation: u64) {
    let path = policies.join("data.json");
    let mut data: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    data["soak"] = json!({"generation": generation});
    let tmp = policies.join(".data.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&data).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// The shipped policies, with grants living 30 s instead of 120 s: every key the store writes
/// then lives at most about a minute (the soak's tokens are valid 60 s), so a 2-minute run
/// reaches its plateau of keys during warm-up.
fn copy_policies(to: &Path) {
    let from = manifest_dir().join("policies");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
    let path = to.join("data.json");
    let mut data: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let requirements = &mut data["stepguard"]["requirements"];
    requirements["default"]["grant_ttl"] = json!(30);
    for (_, action) in requirements["actions"].as_object_mut().unwrap() {
        if action.get("grant_ttl").is_some() {
            action["grant_ttl"] = json!(30);
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&data).unwrap()).unwrap();
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: u64,
    rss_kib: u64,
    files: usize,
    threads: usize,
    /// Decision records read so far (the throughput).
    decisions: u64,
    /// Keys living at most `SHORT_TTL`.
    keys: Option<u64>,
    long_keys: Option<u64>,
    untimed: Option<u64>,
    spool: u64,
}

/// Keys living at most [`SHORT_TTL`] s, longer-lived keys, keys without a TTL (the evidence
/// streams and their chain set excepted), and all of them by the key's shape (ids replaced
/// by `*`).
fn redis_keys(redis: &RedisServer) -> Option<Keys> {
    let mut con = redis::Client::open(redis.url())
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).ok()?;
    let mut k = Keys::default();
    for key in &keys {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).ok()?;
        // -2: expired since KEYS.
        let no_ttl = pttl == -1 && !key.starts_with("soak:evidence");
        match pttl {
            -2 => continue,
            p if p > SHORT_TTL * 1000 => k.long += 1,
            _ => k.short += 1,
        }
        k.untimed += u64::from(no_ttl);
        let entry = k.shapes.entry(shape(key)).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(pttl.max(0) as u64 / 1000);
    }
    Some(k)
}

/// Keys living longer than this (seconds) are counted apart: a grant's first-use claim is kept
/// an hour past the grant, a known network a day (`context.remember_networks_days: 1`). They
/// cannot be flat within a soak shorter than their lifetime; they are bounded instead.
const SHORT_TTL: i64 = 600;

#[derive(Debug, Default, Clone)]
struct Keys {
    short: u64,
    long: u64,
    untimed: u64,
    shapes: Shapes,
}

/// Key shape → (keys, longest TTL in seconds).
type Shapes = BTreeMap<String, (u64, u64)>;

fn shape(key: &str) -> String {
    const WORDS: [&str; 11] = [
        "stepguard",
        "grant",
        "challenge",
        "attempts",
        "event",
        "latest",
        "grants",
        "open",
        "count",
        "soak",
        "evidence",
    ];
    key.split(':')
        .map(|part| match WORDS.contains(&part) {
            true => part,
            false => "*",
        })
        .collect::<Vec<_>>()
        .join(":")
}

fn spool_bytes(spool: &Path) -> u64 {
    let mut total = 0;
    for chain in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(chain.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().to_string_lossy().ends_with(".jsonl") {
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

mod criteria;

#[test]
#[ignore = "a long soak: scripts/soak (SOAK_SECS, default 900)"]
fn soak_mixed_load_with_redis_restarts_storms_and_reloads() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    let tmp = TempDir::new("soak");
    let (policies, spool) = (tmp.path().join("policies"), tmp.path().join("spool"));
    copy_policies(&policies);
    let mut redis = RedisServer::start_with_aof("everysec");
    let (grpc, http) = Served::ports();
    let config_path = tmp.path().join("stepguard.yaml");
    std::fs::write(
        &config_path,
        config(&redis.url(), &policies, &spool, grpc, http),
    )
    .unwrap();
    let mut sidecar = Served::start(&config_path, &tmp.path().join("stepguard.log"), grpc, http);
    let upstream = EchoUpstream::start();
    let envoy = Envoy::start(&EnvoyConfig::new(grpc, http, upstream.port()));
    eprintln!(
        "soak: {secs} s; stepguard {} (pid {}), envoy :{}, redis :{}",
        env!("CARGO_BIN_EXE_stepguard"),
        sidecar.pid(),
        envoy.listener_port(),
        redis.port()
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        base: envoy.base_url(),
        seen: seen.clone(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flows = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| rt.spawn(work(client.clone(), w, stop.clone(), flows.clone())))
        .collect();

    let started = Instant::now();
    let mut tail = Tail::new(&spool);
    let mut samples = Vec::new();
    let (mut restarts, mut storms, mut reloads) = (0u64, 0u64, 0u64);
    let mut next_sample = 0;
    let mut shapes = Shapes::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        tail.poll();
        let t = started.elapsed().as_secs();
        if t >= next_sample {
            next_sample = t + 5;
            let keys = redis_keys(&redis);
            if let Some(k) = &keys {
                shapes = k.shapes.clone();
            }
            samples.push(Sample {
                at: t,
                rss_kib: sidecar.rss_kib(),
                files: sidecar.open_files(),
                threads: sidecar.threads(),
                decisions: tail.audit.decisions,
                keys: keys.as_ref().map(|k| k.short),
                long_keys: keys.as_ref().map(|k| k.long),
                untimed: keys.as_ref().map(|k| k.untimed),
                spool: spool_bytes(&spool),
            });
        }
        if t >= 30 * (storms + 1) {
            storms += 1;
            rt.spawn(storm(client.clone(), storms));
        }
        if t >= 45 * (reloads + 1) {
            reloads += 1;
            reload(&policies, reloads);
        }
        if t >= 60 * (restarts + 1) {
            restarts += 1;
            redis.kill9();
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(200));
                tail.poll();
            }
            redis.restart();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = rt.block_on(w);
    }
    sidecar.stop();
    tail.poll();
    let verify = Command::new(env!("CARGO_BIN_EXE_stepguard"))
        .args(["audit", "verify"])
        .arg(&spool)
        .arg("--key")
        .arg(evidence_public_key())
        .output()
        .unwrap();
    let seen = seen.lock().unwrap();
    let report = criteria::Report {
        secs,
        samples: &samples,
        seen: &seen,
        audit: &tail.audit,
        events: (restarts, storms, reloads),
        shapes: &shapes,
        verified: verify.status.success(),
        verify_output: String::from_utf8_lossy(&verify.stdout).into_owned()
            + &String::from_utf8_lossy(&verify.stderr),
    };
    report.print_and_assert();
    drop(envoy);
}
