//! The Redis store under the pipeline and the sidecar: fail closed while Redis is down (public
//! routes pass), build while it is down, the config validated, a black-holed connection replaced.

use super::*;

fn public() -> RawRequest {
    RawRequest {
        method: "GET".into(),
        host: "api.example.com".into(),
        path: "/public/hello".into(),
        ..Default::default()
    }
}

fn transfer(token: &str) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/accounts/A1/transfers".into(),
        headers: HashMap::from([
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), format!("Bearer {token}")),
        ]),
        body: json!({"amount": 50_000, "currency": "EUR", "payee": "mallory"})
            .to_string()
            .into_bytes(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_fails_closed_while_redis_is_down_and_public_routes_pass() {
    let mut server = RedisServer::start();
    let config = support::sidecar::quickstart(with_redis(&server.url(), 50));
    let app = App::build(&config).await.unwrap();
    let p = app.pipeline().clone();
    let token = support::tokens::token("alice", "aal1", 10);

    // Redis up: the large transfer is challenged and the challenge is in Redis.
    let started = Instant::now();
    let d = loop {
        let d = p.decide(transfer(&token)).await;
        if d.verdict != Verdict::Fault || started.elapsed() > Duration::from_secs(5) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Verdict::Challenge { challenge_id, .. } = &d.verdict else {
        panic!("{d:?}")
    };
    let stored = p
        .grants
        .challenge(challenge_id, support::tokens::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(&stored.digest), d.transaction.as_ref());
    assert_every_key_has_a_ttl(&server);

    server.kill9();
    for _ in 0..3 {
        let d = p.decide(public()).await;
        assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
        assert_eq!(d.reason, "not_sensitive");

        let t = Instant::now();
        let d = p.decide(transfer(&token)).await;
        let elapsed = t.elapsed();
        assert_eq!(d.verdict, Verdict::Fault, "{d:?}");
        assert_eq!(d.reason, "grant_store_unavailable");
        assert!(elapsed < BUDGET + SLACK, "sensitive check took {elapsed:?}");
    }

    server.restart();
    let started = Instant::now();
    loop {
        let d = p.decide(transfer(&token)).await;
        if matches!(d.verdict, Verdict::Challenge { .. }) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pipeline did not recover: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_sidecar_builds_while_redis_is_down() {
    let mut server = RedisServer::start();
    server.kill9();
    let config = support::sidecar::quickstart(with_redis(&server.url(), 50));
    let t = Instant::now();
    let app = App::build(&config).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    let d = app.pipeline().decide(public()).await;
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
}

#[test]
fn redis_grants_config_is_validated() {
    use stepguard::config::GrantsConfig;
    let c = parse_grants("grants:\n  store: redis\n  url: redis://127.0.0.1:6379/0\n").unwrap();
    let GrantsConfig::Redis {
        url,
        timeout_ms,
        key_prefix,
    } = &c.grants
    else {
        panic!("{:?}", c.grants)
    };
    assert_eq!(url, "redis://127.0.0.1:6379/0");
    assert_eq!(*timeout_ms, 50);
    assert_eq!(key_prefix, "sg");
    for url in ["rediss://cache:6380", "unix:///run/redis.sock"] {
        parse_grants(&format!("grants:\n  store: redis\n  url: {url}\n")).unwrap();
    }
    for url in ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis://"] {
        let r = parse_grants(&format!("grants:\n  store: redis\n  url: \"{url}\"\n"));
        assert_eq!(invalid_field(r), "grants.url", "{url}");
    }
    for ms in [0, 1001] {
        let r = parse_grants(&format!(
            "grants:\n  store: redis\n  url: redis://h\n  timeout_ms: {ms}\n"
        ));
        assert_eq!(invalid_field(r), "grants.timeout_ms");
    }
    for prefix in ["\"\"", "\"a{b}\"", "\"a b\""] {
        let r = parse_grants(&format!(
            "grants:\n  store: redis\n  url: redis://h\n  key_prefix: {prefix}\n"
        ));
        assert_eq!(invalid_field(r), "grants.key_prefix", "{prefix}");
    }
    assert!(matches!(
        parse_grants("grants:\n  store: redis\n  url: redis://h\n  pool: 3\n"),
        Err(ConfigError::Parse(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_replaced_and_service_recovers() {
    let server = RedisServer::start();
    let hole = Blackhole::start(server.port()).await;
    let store = store_at(&hole.url(), BUDGET * 4);
    assert_recovers(&store, Duration::from_secs(5)).await;
    // The peer vanishes without a FIN or RST: the connection stays open and silent.
    hole.cut();
    for _ in 0..5 {
        let t = Instant::now();
        let r = store.find_grant("dev1:bh", NOW).await;
        assert!(is_unavailable(&r), "find_grant: {r:?}");
        assert!(t.elapsed() < BUDGET * 4 + SLACK, "{:?}", t.elapsed());
    }
    // The network heals, but the old connection is dead for good: only a new one works.
    hole.heal();
    assert_recovers(&store, Duration::from_secs(10)).await;
}
