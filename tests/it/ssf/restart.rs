//! A restart loses no applied event: replica B, stopped (SIGTERM) and started again on the same
//! config, still refuses what was applied through replica A before, and still knows the `jti`s.

use std::time::{Duration, Instant};

use serde_json::json;

use super::cluster::{Cluster, IDP, Options, PUSH_TOKEN, session_token};
use crate::support::tokens::now;
use crate::support::transmitter::{account_disabled, push, session_revoked};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_applied_before_a_replica_restart_still_refuse_after_it() {
    let mut c = Cluster::start(Options::default());
    let grace = session_token("grace", "grace-s1");
    let henry = session_token("henry", "henry-s1");
    let ivy = session_token("ivy", "ivy-s1");
    for token in [&grace, &henry, &ivy] {
        assert_eq!(
            c.b.transfer(token).await.0,
            200,
            "approved before any event"
        );
    }

    let revoked = c
        .transmitter
        .sign(&session_revoked(IDP, "grace", "grace-s1"));
    let disabled = c
        .transmitter
        .sign(&account_disabled(IDP, "henry", now() - 1));
    for set in [&revoked, &disabled] {
        assert_eq!(push(&c.a.push_url(), set, Some(PUSH_TOKEN)).await.0, 202);
    }
    let refusals = [(&grace, "session_revoked"), (&henry, "account_event")];
    for (token, reason) in refusals {
        let (status, body) = c.b.transfer(token).await;
        assert_eq!((status, &body["reason"]), (403, &json!(reason)), "{body}");
    }

    c.b.restart();
    // B is back and deciding through its Envoy: ivy's session passes again.
    let started = Instant::now();
    loop {
        let (status, body) = c.b.transfer(&ivy).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "B never approved again after its restart: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (token, reason) in refusals {
        let (status, body) = c.b.transfer(token).await;
        assert_eq!(
            (status, &body["reason"]),
            (403, &json!(reason)),
            "after the restart: {body}"
        );
    }
    // The replay memory too.
    let (status, body) = push(&c.b.push_url(), &revoked, Some(PUSH_TOKEN)).await;
    assert_eq!(
        (status, &body["description"]),
        (400, &json!("duplicate jti"))
    );
}
