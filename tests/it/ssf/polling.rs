//! Poll delivery (RFC 8936): replica A polls the transmitter; what it applies it acknowledges,
//! what it refuses it reports in `setErrs`, and both replicas enforce what was applied.

use std::time::Duration;

use serde_json::json;

use super::cluster::{Cluster, IDP, Options, counter, eventually, session_token, signed_in_at};
use crate::support::tokens::now;
use crate::support::transmitter::account_disabled;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_account_disabled_is_acknowledged_and_refuses_the_subject_on_both_replicas() {
    let c = Cluster::start(Options {
        poll: true,
        ..Options::default()
    });
    let frank = session_token("frank", "frank-s1");
    let gina = session_token("gina", "gina-s1");
    for replica in [&c.a, &c.b] {
        for token in [&frank, &gina] {
            let (status, body) = replica.transfer(token).await;
            assert_eq!(status, 200, "approved before any event: {body}");
        }
    }

    // frank signed in 5 s ago; his account is disabled after that. gina's SET is forged.
    let at = now() - 1;
    let disabled = account_disabled(IDP, "frank", at);
    let forged = account_disabled(IDP, "gina", at).forged();
    c.transmitter.enqueue(&disabled);
    c.transmitter.enqueue(&forged);
    eventually(Duration::from_secs(15), "the SET acknowledged", || {
        c.transmitter.acked().contains(&disabled.jti)
    })
    .await;
    eventually(Duration::from_secs(15), "the forged SET reported", || {
        c.transmitter.set_errs().contains_key(&forged.jti)
    })
    .await;
    assert_eq!(
        c.transmitter.set_errs()[&forged.jti]["err"],
        json!("invalid_key")
    );
    assert!(!c.transmitter.acked().contains(&forged.jti));
    assert_eq!(c.transmitter.queued(), 0, "both deliveries ended");
    let (polls, refused) = c.transmitter.polls();
    assert!(polls >= 2, "{polls} polls");
    assert_eq!(refused, 0, "a poll without the bearer token");

    // Acknowledged means applied: frank is refused on both replicas, gina is not.
    for replica in [&c.a, &c.b] {
        let (status, body) = replica.transfer(&frank).await;
        assert_eq!(
            (status, &body["reason"]),
            (403, &json!("account_event")),
            "{body}"
        );
        assert_eq!(replica.transfer(&gina).await.0, 200, "a forged SET applied");
    }
    let metrics = c.a.metrics().await;
    let events = |labels: &[(&str, &str)]| counter(&metrics, "stepguard_ssf_events_total", labels);
    assert_eq!(
        events(&[
            ("delivery", "poll"),
            ("outcome", "applied"),
            ("type", "account-disabled")
        ]),
        1.0
    );
    assert_eq!(
        events(&[("delivery", "poll"), ("outcome", "invalid_key")]),
        1.0
    );

    // A sign-in newer than the event is frank's way back.
    let again = signed_in_at("frank", "aal2", at + 1);
    let (status, body) = c.b.transfer(&again).await;
    assert_eq!(status, 200, "a sign-in after the event: {body}");
}
