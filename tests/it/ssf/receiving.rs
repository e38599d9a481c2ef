//! Push delivery (RFC 8935) across replicas: what one replica applies, the other enforces on the
//! next sensitive request; what must be refused is refused with the RFC's error code, and
//! changes nothing.

use serde_json::{Value, json};

use super::cluster::{Cluster, IDP, Options, PUSH_TOKEN, counter, session_token};
use crate::support::transmitter::{push, session_revoked, unknown_event};

const EVENTS: &str = "stepguard_ssf_events_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_pushed_to_replica_a_refuses_that_session_on_replica_b() {
    let c = Cluster::start(Options::default());
    let revoked = session_token("alice", "alice-s1");
    let other_session = session_token("alice", "alice-s2");
    let other_subject = session_token("bob", "bob-s1");

    // Before the event, B approves each of them on the session alone.
    for token in [&revoked, &other_session, &other_subject] {
        let (status, body) = c.b.transfer(token).await;
        assert_eq!(status, 200, "approved before the event: {body}");
    }

    let set = c
        .transmitter
        .sign(&session_revoked(IDP, "alice", "alice-s1"));
    assert_eq!(
        push(&c.a.push_url(), &set, Some(PUSH_TOKEN)).await,
        (202, Value::Null)
    );
    let applied = &[
        ("delivery", "push"),
        ("outcome", "applied"),
        ("type", "session-revoked"),
    ];
    assert_eq!(counter(&c.a.metrics().await, EVENTS, applied), 1.0);

    // That session's next sensitive request, through B (and through A): refused, and the
    // application never sees it.
    let hits = c.upstream.hits();
    for replica in [&c.b, &c.a] {
        let (status, body) = replica.transfer(&revoked).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(
            (&body["error"], &body["reason"]),
            (&json!("access_denied"), &json!("session_revoked")),
            "{body}"
        );
    }
    assert_eq!(c.upstream.hits(), hits, "a refused request reached the app");

    // Another session of the same subject, and another subject, still pass on B.
    for token in [&other_session, &other_subject] {
        let (status, body) = c.b.transfer(token).await;
        assert_eq!(status, 200, "only the revoked session is refused: {body}");
    }
    // A public route still passes, even with the revoked session's token.
    assert_eq!(c.b.public(&revoked).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_forged_misaddressed_and_unknown_sets_are_refused_or_ignored() {
    let c = Cluster::start(Options::default());
    let dave = session_token("dave", "dave-s1");
    let erin = session_token("erin", "erin-s1");
    for token in [&dave, &erin] {
        assert_eq!(
            c.b.transfer(token).await.0,
            200,
            "approved before any event"
        );
    }

    // Without the stream's bearer token: 401, nothing applied.
    let first = c.transmitter.sign(&session_revoked(IDP, "dave", "dave-s1"));
    for bearer in [None, Some("not-the-push-token")] {
        let (status, body) = push(&c.a.push_url(), &first, bearer).await;
        assert_eq!(
            (status, &body["err"]),
            (401, &json!("authentication_failed"))
        );
    }
    assert_eq!(
        c.b.transfer(&dave).await.0,
        200,
        "an unauthorised push applied"
    );

    // Applied once (through A), refused as a duplicate afterwards on either replica: the
    // replay memory is in the shared store.
    assert_eq!(
        push(&c.a.push_url(), &first, Some(PUSH_TOKEN)).await,
        (202, Value::Null)
    );
    assert_eq!(
        c.b.transfer(&dave).await.0,
        403,
        "the first delivery applied"
    );
    let duplicate = json!({"err": "invalid_request", "description": "duplicate jti"});
    for replica in [&c.b, &c.a] {
        assert_eq!(
            push(&replica.push_url(), &first, Some(PUSH_TOKEN)).await,
            (400, duplicate.clone())
        );
    }

    // A bad signature (another key under the transmitter's `kid`) and a SET for another
    // receiver: refused with their RFC 8935 codes; erin stays approved.
    let revoke_erin = || session_revoked(IDP, "erin", "erin-s1");
    let forged = c.transmitter.sign(&revoke_erin().forged());
    let (status, body) = push(&c.a.push_url(), &forged, Some(PUSH_TOKEN)).await;
    assert_eq!(
        (status, &body["err"]),
        (400, &json!("invalid_key")),
        "{body}"
    );
    let elsewhere = c
        .transmitter
        .sign(&revoke_erin().with_aud("https://another-receiver.test/"));
    let (status, body) = push(&c.b.push_url(), &elsewhere, Some(PUSH_TOKEN)).await;
    assert_eq!(
        (status, &body["err"]),
        (400, &json!("invalid_audience")),
        "{body}"
    );

    // An event type nobody defined: accepted (202), counted, and nothing else.
    let ignored = &[
        ("delivery", "push"),
        ("outcome", "ignored"),
        ("type", "unknown"),
    ];
    let before = counter(&c.a.metrics().await, EVENTS, ignored);
    let unknown = c.transmitter.sign(&unknown_event(IDP, "erin"));
    assert_eq!(
        push(&c.a.push_url(), &unknown, Some(PUSH_TOKEN)).await,
        (202, Value::Null)
    );
    assert_eq!(counter(&c.a.metrics().await, EVENTS, ignored), before + 1.0);
    for replica in [&c.a, &c.b] {
        let (status, body) = replica.transfer(&erin).await;
        assert_eq!(status, 200, "a refused or ignored SET changed erin: {body}");
    }

    // Each refusal counted under its reason, where it was refused.
    let refused = |metrics: &str, outcome: &str| {
        counter(
            metrics,
            EVENTS,
            &[("delivery", "push"), ("outcome", outcome)],
        )
    };
    let (a, b) = (c.a.metrics().await, c.b.metrics().await);
    assert_eq!(refused(&a, "authentication_failed"), 2.0);
    assert_eq!(refused(&a, "invalid_key"), 1.0);
    assert_eq!(refused(&b, "invalid_audience"), 1.0);
    assert_eq!(
        (refused(&a, "replayed"), refused(&b, "replayed")),
        (1.0, 1.0)
    );

    // The same event, well signed and addressed, is applied: the refusals above were theirs.
    let genuine = c.transmitter.sign(&revoke_erin());
    assert_eq!(
        push(&c.a.push_url(), &genuine, Some(PUSH_TOKEN)).await,
        (202, Value::Null)
    );
    let (status, body) = c.b.transfer(&erin).await;
    assert_eq!((status, &body["reason"]), (403, &json!("session_revoked")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_set_under_an_already_applied_jti_is_refused_as_a_duplicate() {
    let c = Cluster::start(Options::default());
    let lee = session_token("lee", "lee-s1");
    let mo = session_token("mo", "mo-s1");
    for token in [&lee, &mo] {
        assert_eq!(
            c.b.transfer(token).await.0,
            200,
            "approved before any event"
        );
    }
    let first = session_revoked(IDP, "lee", "lee-s1");
    let applied = c.transmitter.sign(&first);
    assert_eq!(
        push(&c.a.push_url(), &applied, Some(PUSH_TOKEN)).await,
        (202, Value::Null)
    );
    // Another event, signed by the transmitter, reusing that `jti` (RFC 8417 §2.2: unique).
    let reused = c
        .transmitter
        .sign(&session_revoked(IDP, "mo", "mo-s1").with_jti(&first.jti));
    let duplicate = json!({"err": "invalid_request", "description": "duplicate jti"});
    assert_eq!(
        push(&c.b.push_url(), &reused, Some(PUSH_TOKEN)).await,
        (400, duplicate)
    );
    assert_eq!(
        c.b.transfer(&mo).await.0,
        200,
        "the reused jti's SET was applied"
    );
}
