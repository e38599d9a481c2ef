//! What is recorded durably: anonymous refusals are not, authenticated denials are.

use super::*;

/// A directory of its own under the system's temporary directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("stepguard-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| match e.file_type().unwrap().is_dir() {
            true => dir_bytes(&e.path()),
            false => e.metadata().unwrap().len(),
        })
        .sum()
}

/// The text of every file under `dir` (the spool's segments are in one directory per chain).
fn spooled_text(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| match path.is_dir() {
            true => spooled_text(&path),
            false => std::fs::read_to_string(path).unwrap_or_default(),
        })
        .collect()
}

/// The quickstart pipeline with its evidence spool in `spool`.
async fn pipeline_with_spool(spool: &std::path::Path) -> Arc<Pipeline> {
    let dir = format!("dir: {}", spool.display());
    let cfg = config(|t| t.replace("dir: stepguard-evidence", &dir));
    let clock = Arc::new(ManualClock::new(NOW));
    let app = App::build_with_clock(&cfg, clock).await.unwrap();
    let p = app.pipeline().clone();
    assert!(p.evidence.spool().is_some_and(|s| s.available), "no spool");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_refusals_grow_the_spool_by_less_than_64_kib() {
    let scratch = Scratch::new("intake-spool");
    let p = pipeline_with_spool(&scratch.0).await;
    let before = dir_bytes(&scratch.0);
    let forged = {
        let t = token("alice", "aal3", NOW, 0);
        format!("{}x", &t[..t.len() - 1])
    };
    let request = |i: usize| {
        let mut raw = match i % 4 {
            0 => transfer(None, 1, "bob"),
            1 => transfer(Some("not.a.jwt"), 1, "bob"),
            2 => transfer(Some(&forged), 1, "bob"),
            _ => transfer(None, 1, "bob"),
        };
        if i % 4 == 3 {
            raw.path = format!("/v1/accounts/A{i}%2F..%2Fx/transfers");
        }
        raw.source_address = Some(format!("10.{}.{}.{}", i % 7, i % 251, i % 13));
        raw
    };
    for round in 0..50 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in round * 200..(round + 1) * 200 {
            let (p, raw) = (p.clone(), request(i));
            tasks.spawn(async move { p.decide(raw).await });
        }
        while let Some(d) = tasks.join_next().await {
            let d = d.unwrap();
            assert!(
                matches!(
                    (&d.verdict, d.reason.as_str()),
                    (Verdict::Unauthenticated { .. }, "invalid_token")
                        | (Verdict::Refused, "malformed_request")
                ),
                "{d:?}"
            );
        }
    }
    let grown = dir_bytes(&scratch.0).saturating_sub(before);
    assert!(
        grown < 64 << 10,
        "10,000 anonymous refusals grew the spool by {grown} bytes"
    );
}

#[tokio::test]
async fn an_authenticated_denial_is_still_recorded_durably() {
    let scratch = Scratch::new("authenticated-denial");
    let p = pipeline_with_spool(&scratch.0).await;
    // Identified, then refused: a body Envoy sent only part of cannot be bound.
    let mut raw = transfer(Some(&token("alice", "aal2", NOW, 10)), 1, "bob");
    raw.headers
        .insert("x-envoy-auth-partial-body".into(), "true".into());
    let d = p.decide(raw).await;
    assert_eq!(
        (&d.verdict, d.reason.as_str(), status(&d)),
        (&Verdict::Refused, "body_unavailable", 400)
    );
    // Answered only once durable: its record is on disk now.
    let spooled = spooled_text(&scratch.0);
    let record = spooled
        .lines()
        .find(|l| l.contains(&d.id))
        .unwrap_or_else(|| panic!("no record of {}", d.id));
    assert!(record.contains("\"body_unavailable\""), "{record}");
}
