//! The soak's clients: a fixed arrival rate and tokens kept as real clients keep them.
//!
//! - **Pacing.** Each client sends a request every `clients / rate` seconds on a fixed schedule,
//!   whatever the answers take (a slow answer is caught up, not lost; a client more than a
//!   second behind drops the missed slots and counts them), so the load is the same in every
//!   part of the run whether the machine is busy or idle, and the achieved rate is measured
//!   against the target.
//! - **Tokens.** Each subject has a session token (`aal2`) and a weak one (`aal1`), each valid
//!   [`TOKEN_SECS`] and kept until fewer than [`RENEW_SECS`] remain, then replaced by a new
//!   sign-in; a step-up's retry carries a new sign-in's token (first seen by the sidecar), which
//!   then becomes the subject's session token. First-seen tokens therefore arrive at the rate
//!   of renewals plus step-ups, not at the request rate.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::SUBJECTS;
use crate::support::tokens::{claims, now, sign};

/// How long a soak token is valid (s): what the store keeps for it (a claimed sign-in) lives
/// about as long, so every kind of key reaches its plateau in a 2-minute run.
pub const TOKEN_SECS: i64 = 60;
/// A client renews its subject's token when fewer seconds than this remain.
pub const RENEW_SECS: i64 = 15;

/// Step-up amounts stay below the `aal3` tier (10 000 EUR) and unique per subject for far
/// longer than a challenge or grant lives.
const FLOW_AMOUNTS: u64 = 9000;

/// What the clients saw.
#[derive(Default)]
pub struct Seen {
    /// (kind, status) → count.
    pub answers: BTreeMap<(&'static str, u16), u64>,
    /// Decision ids of the approvals a client saw.
    pub approvals: Vec<String>,
    /// 200s that must not have been.
    pub wrong: Vec<String>,
    pub transport_errors: u64,
}

/// Counters the sampler reads while the clients run.
#[derive(Default)]
pub struct Counters {
    /// Paced requests answered (any status; storms not included).
    pub answered: AtomicU64,
    /// Slots a client dropped because it was more than a second behind.
    pub missed: AtomicU64,
    /// Tokens signed (each one first seen by the sidecar when it is first sent).
    pub minted: AtomicU64,
}

/// (subject, acr) → (token, its `exp`).
type Tokens = HashMap<(u64, &'static str), (String, i64)>;

/// Each subject's current tokens.
pub struct Wallet {
    tokens: Mutex<Tokens>,
    /// A new token for every request (`SOAK_TOKENS=per_request`: what Runs 1–3's clients
    /// sent), to compare with.
    per_request: bool,
}

impl Wallet {
    pub fn new(per_request: bool) -> Self {
        Self {
            tokens: Mutex::default(),
            per_request,
        }
    }

    /// The subject's token at `acr`, renewed (a new sign-in) when it nears expiry.
    fn get(&self, sub: u64, acr: &'static str, counters: &Counters) -> String {
        let now = now();
        if let Some((token, exp)) = self.tokens.lock().unwrap().get(&(sub, acr))
            && exp - now > RENEW_SECS
            && !self.per_request
        {
            return token.clone();
        }
        // Signed in a minute ago: fresh enough for a session (`max_age` 300) while it is kept,
        // and older than any open challenge (lifetime 30 s, skew 5 s), so it never completes
        // one (a storm's or a weak request's on the same transfer).
        let auth_time = now - 60;
        let token = mint(sub, acr, auth_time, counters);
        self.tokens
            .lock()
            .unwrap()
            .insert((sub, acr), (token.clone(), now + TOKEN_SECS));
        token
    }

    /// After a step-up the new sign-in's token is the subject's session token.
    fn replace(&self, sub: u64, token: &str, exp: i64) {
        self.tokens
            .lock()
            .unwrap()
            .insert((sub, "aal2"), (token.to_string(), exp));
    }
}

fn subject(sub: u64) -> String {
    format!("soak-{sub}")
}

/// A token for `sub` at `acr`, signed in at `auth_time`, valid [`TOKEN_SECS`].
fn mint(sub: u64, acr: &str, auth_time: i64, counters: &Counters) -> String {
    let mut c = claims(&subject(sub), acr, 0);
    c["auth_time"] = json!(auth_time);
    c["exp"] = json!(now() + TOKEN_SECS);
    counters.minted.fetch_add(1, Ordering::Relaxed);
    sign(&c)
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub seen: Arc<Mutex<Seen>>,
    pub counters: Arc<Counters>,
    pub wallet: Wallet,
}

impl Client {
    /// A transfer of `amount` with `token`: the status.
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
        if kind != "storm" {
            self.counters.answered.fetch_add(1, Ordering::Relaxed);
        }
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

/// A client's fixed schedule: one slot every `period`.
struct Pace {
    next: Instant,
    period: Duration,
}

impl Pace {
    /// Waits for the next slot. More than a second behind, the missed slots are dropped (and
    /// counted) rather than sent in a burst.
    async fn tick(&mut self, counters: &Counters) {
        let now = Instant::now();
        if now > self.next + Duration::from_secs(1) {
            let behind = ((now - self.next).as_nanos() / self.period.as_nanos()) as u32;
            counters
                .missed
                .fetch_add(u64::from(behind), Ordering::Relaxed);
            self.next += self.period * behind;
        }
        tokio::time::sleep_until(self.next.into()).await;
        self.next += self.period;
    }
}

/// Client `w`'s mix, one request per slot of `period`, until `stop`: per eight turns, two
/// public pages, three small transfers on the session token, one on the weak token, and one
/// RFC 9470 step-up (a large transfer on the session token is challenged, the retry with a
/// new sign-in is approved, its replay is not: three slots).
pub async fn work(
    client: Arc<Client>,
    w: u64,
    period: Duration,
    stop: Arc<AtomicBool>,
    flows: Arc<AtomicU64>,
) {
    // Clients start spread over one period, not all at once.
    let offset = period.mul_f64((w % 16) as f64 / 16.0);
    let mut pace = Pace {
        next: Instant::now() + offset,
        period,
    };
    let counters = client.counters.clone();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sub = (w * 7919 + n * 104_729) % SUBJECTS;
        pace.tick(&counters).await;
        match n % 8 {
            0 | 4 => {
                client.public().await;
            }
            1 | 3 | 5 => {
                let t = client.wallet.get(sub, "aal2", &counters);
                client.transfer("session", &t, 1 + (n % 900)).await;
            }
            2 => {
                let t = client.wallet.get(sub, "aal1", &counters);
                client.transfer("weak", &t, 1 + (n % 900)).await;
            }
            _ => {
                // max_age 0: the session token never suffices; a grant for this transfer must.
                let amount = 1000 + flows.fetch_add(1, Ordering::Relaxed) % FLOW_AMOUNTS;
                let session = client.wallet.get(sub, "aal2", &counters);
                if client.transfer("challenge", &session, amount).await != Some(401) {
                    continue;
                }
                pace.tick(&counters).await;
                let (stepped, exp) = (mint(sub, "aal2", now(), &counters), now() + TOKEN_SECS);
                let status = client.transfer("stepped_up", &stepped, amount).await;
                client.wallet.replace(sub, &stepped, exp);
                if status == Some(200) {
                    pace.tick(&counters).await;
                    client.transfer("replay", &stepped, amount).await;
                }
            }
        }
    }
}

/// Many weak requests at once from a few subjects, each retrying with its token: challenges,
/// then 429s. On top of the paced rate (the same in every part of the run).
pub async fn storm(client: Arc<Client>, round: u64) {
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let sub = (round * 31 + i) % SUBJECTS;
                let t = client.wallet.get(sub, "aal1", &client.counters);
                for k in 0..10 {
                    client.transfer("storm", &t, 2000 + k).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}
