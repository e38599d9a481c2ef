use std::sync::Arc;

use super::*;
use crate::grant::{GrantTerms, MemoryStore, Requirement};
use crate::testkit::evidence::Kept;

const NOW: i64 = 1_800_000_000;

fn ladder() -> Vec<String> {
    ["aal1", "aal2", "aal3"].map(String::from).to_vec()
}

fn challenge(max_age: i64, single_use: bool) -> Challenge {
    Challenge {
        id: "c1".into(),
        digest: "dev1:txn".into(),
        subject: "iss|alice".into(),
        action: "payments.transfer".into(),
        requirement: Requirement {
            acr_values: vec!["aal2".into()],
            max_age,
        },
        terms: GrantTerms {
            single_use,
            ttl: 120,
        },
        issued_at: NOW,
        expires_at: NOW + 300,
        return_to: "/".into(),
        nonce: "n".into(),
        pkce_verifier: "v".into(),
        attempts: 1,
        browser_binding: None,
        authorization_details: None,
        policy_revision: None,
    }
}

fn assurance(acr: &str, auth_time: i64) -> Assurance {
    Assurance {
        subject: "iss|alice".into(),
        acr: acr.into(),
        amr: vec!["pwd".into(), "otp".into()],
        auth_time,
        method: "oidc".into(),
        approver: None,
        event: AuthEvent::sign_in("iss|alice".into(), auth_time, Some("sid-1".into())),
    }
}

/// `assurance` from a sign-in of its own (another IdP session).
fn signed_in(acr: &str, auth_time: i64, sid: &str) -> Assurance {
    let mut a = assurance(acr, auth_time);
    a.event = AuthEvent::sign_in("iss|alice".into(), auth_time, Some(sid.into()));
    a
}

fn completer() -> Completer {
    Completer::new(
        Arc::new(MemoryStore::new(100)),
        Arc::new(crate::evidence::LogEvidence::default()),
        ladder(),
        5,
    )
}

#[test]
fn the_ladder_decides_what_satisfies() {
    let l = ladder();
    let need = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(acr_satisfies(&l, "aal2", &need(&["aal2"])));
    assert!(acr_satisfies(&l, "aal3", &need(&["aal2"])));
    assert!(!acr_satisfies(&l, "aal1", &need(&["aal2"])));
    assert!(
        acr_satisfies(&l, "aal2", &need(&["aal3", "aal2"])),
        "weakest acceptable"
    );
    assert!(!acr_satisfies(&l, "urn:other", &need(&["aal2"])));
    assert!(acr_satisfies(&l, "urn:other", &need(&["urn:other"])));
    assert!(!acr_satisfies(&l, "aal3", &need(&["urn:other"])));
}

#[test]
fn what_was_achieved_is_checked_against_the_challenge() {
    let c = completer();
    let ch = challenge(0, true);
    assert_eq!(c.check(&ch, &assurance("aal2", NOW + 10), NOW + 20), Ok(()));
    assert_eq!(
        c.check(&ch, &assurance("aal3", NOW - 4), NOW),
        Ok(()),
        "skew"
    );
    assert!(matches!(
        c.check(&ch, &assurance("aal1", NOW + 10), NOW + 20),
        Err(CompletionError::WeakAcr { .. })
    ));
    assert_eq!(
        c.check(&ch, &assurance("aal2", NOW - 60), NOW),
        Err(CompletionError::StaleAuthentication),
        "a login from before the challenge never satisfies it"
    );
    let mut other = assurance("aal3", NOW + 10);
    other.subject = "iss|mallory".into();
    assert_eq!(
        c.check(&ch, &other, NOW + 20),
        Err(CompletionError::OtherSubject)
    );
    assert_eq!(
        c.check(&ch, &assurance("aal2", NOW + 10), NOW + 300),
        Err(CompletionError::NotOpen),
        "expired"
    );
    let aged = challenge(60, true);
    assert_eq!(
        c.check(&aged, &assurance("aal2", NOW + 1), NOW + 100),
        Err(CompletionError::TooOld)
    );
}

#[tokio::test]
async fn completing_mints_one_grant_and_closes_the_challenge_once() {
    let c = completer();
    let ch = challenge(0, true);
    c.grants().put_challenge(ch.clone()).await.unwrap();
    let g = c
        .complete(&ch, &assurance("aal3", NOW + 10), NOW + 20)
        .await
        .unwrap();
    assert_eq!(
        (g.digest.as_str(), g.acr.as_str(), g.uses_left, g.expires_at),
        ("dev1:txn", "aal3", Some(1), NOW + 20 + 120)
    );
    assert_eq!(g.challenge_id.as_deref(), Some("c1"));
    assert_eq!(
        c.grants().find_grant("dev1:txn", NOW + 20).await.unwrap(),
        Some(g)
    );
    assert!(
        c.grants()
            .challenge("c1", NOW + 20)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        c.complete(&ch, &signed_in("aal3", NOW + 11, "sid-again"), NOW + 20)
            .await,
        Err(CompletionError::NotOpen),
        "a challenge is completed once"
    );
}

#[tokio::test]
async fn a_refused_completion_leaves_the_challenge_open_and_no_grant() {
    let c = completer();
    let ch = challenge(0, false);
    c.grants().put_challenge(ch.clone()).await.unwrap();
    assert!(
        c.complete(&ch, &assurance("aal1", NOW + 10), NOW + 20)
            .await
            .is_err()
    );
    assert!(
        c.grants()
            .challenge("c1", NOW + 20)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        c.grants()
            .find_grant("dev1:txn", NOW + 20)
            .await
            .unwrap()
            .is_none()
    );
    let g = c
        .complete(&ch, &assurance("aal2", NOW + 10), NOW + 20)
        .await
        .unwrap();
    assert_eq!(
        g.uses_left, None,
        "reusable within its TTL when the terms say so"
    );
}

#[tokio::test]
async fn one_authentication_completes_one_challenge() {
    let c = completer();
    let first = challenge(0, true);
    c.grants().put_challenge(first.clone()).await.unwrap();
    let mut second = challenge(0, true);
    second.id = "c2".into();
    second.digest = "dev1:other-txn".into();
    c.grants().put_challenge(second.clone()).await.unwrap();
    let token = assurance("aal3", NOW + 2);
    c.complete_once(&first, &token, NOW + 3, NOW + 600)
        .await
        .unwrap();
    assert_eq!(
        c.complete_once(&second, &token, NOW + 4, NOW + 600).await,
        Err(CompletionError::AlreadyUsed),
        "the same authentication never approves another transaction"
    );
    assert!(c.grants().challenge("c2", NOW + 4).await.unwrap().is_some());
    // A weaker token claims nothing: its later, stronger sign-in still can.
    let weak = assurance("aal1", NOW + 5);
    assert!(
        c.complete_once(&second, &weak, NOW + 6, NOW + 600)
            .await
            .is_err()
    );
    let mut strong = weak.clone();
    strong.acr = "aal3".into();
    c.complete_once(&second, &strong, NOW + 6, NOW + 600)
        .await
        .unwrap();
}

/// A sink whose lifecycle records fail (a full or broken spool), keeping what it was asked.
#[derive(Default)]
struct Broken(std::sync::Mutex<Vec<String>>);

#[tonic::async_trait]
impl Evidence for Broken {
    async fn record(
        &self,
        _: &crate::evidence::EvidenceContext<'_>,
    ) -> Result<(), crate::evidence::EvidenceError> {
        Ok(())
    }

    async fn lifecycle(&self, event: &Lifecycle<'_>) -> Result<(), crate::evidence::EvidenceError> {
        self.0.lock().unwrap().push(event.kind().to_string());
        Err(crate::evidence::EvidenceError::Unavailable(
            "spool full".into(),
        ))
    }
}

#[tokio::test]
async fn a_completion_that_cannot_be_recorded_mints_no_grant() {
    let store = Arc::new(MemoryStore::new(100));
    let evidence = Arc::new(Broken::default());
    let c = Completer::new(store.clone(), evidence.clone(), ladder(), 5);
    let ch = challenge(0, true);
    store.put_challenge(ch.clone()).await.unwrap();
    let outcome = c
        .complete(&ch, &assurance("aal3", NOW + 10), NOW + 20)
        .await;
    assert!(
        matches!(outcome, Err(CompletionError::Evidence(_))),
        "{outcome:?}"
    );
    assert_eq!(store.find_grant("dev1:txn", NOW + 20).await.unwrap(), None);
    assert!(
        store.challenge("c1", NOW + 20).await.unwrap().is_none(),
        "closed: the user steps up again"
    );
    assert_eq!(
        *evidence.0.lock().unwrap(),
        ["completed", "completion_refused"],
        "the completion was attempted first; the refusal after it"
    );
}

#[tokio::test]
async fn a_challenge_is_either_completed_or_expired_never_both() {
    let c = completer();
    let (mut open, mut done) = (challenge(0, true), challenge(0, true));
    open.id = "open".into();
    done.id = "done".into();
    done.digest = "dev1:other".into();
    for ch in [&open, &done] {
        c.grants().put_challenge(ch.clone()).await.unwrap();
        c.issued(ch);
    }
    c.complete(&done, &assurance("aal3", NOW + 10), NOW + 20)
        .await
        .unwrap();
    assert_eq!(
        c.awaited(),
        2,
        "the open challenge, and the grant minted for `done`"
    );
    // The grant (ttl 120) is never spent: it expires unused at NOW + 140.
    assert_eq!(c.sweep(NOW + 140 + EXPIRY_GRACE_SECS - 1).await, 0);
    assert_eq!(c.sweep(NOW + 140 + EXPIRY_GRACE_SECS).await, 1);
    assert_eq!(c.sweep(NOW + 300).await, 0, "not expired yet (grace)");
    assert_eq!(c.sweep(NOW + 300 + EXPIRY_GRACE_SECS).await, 1);
    assert_eq!(c.awaited(), 0);
    assert_eq!(c.sweep(NOW + 1000).await, 0, "recorded once");

    // The sweeper on another replica recorded it expired first: a late completion is refused.
    let mut late = challenge(0, true);
    late.id = "late".into();
    c.grants().put_challenge(late.clone()).await.unwrap();
    assert!(
        c.grants()
            .claim_once("outcome:late", NOW + 1000, NOW)
            .await
            .unwrap()
    );
    assert_eq!(
        c.complete(&late, &signed_in("aal3", NOW + 10, "sid-late"), NOW + 20)
            .await,
        Err(CompletionError::NotOpen)
    );
    assert_eq!(
        c.grants().find_grant("dev1:txn", NOW + 20).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_grant_never_spent_is_recorded_expired_unused_and_a_spent_one_is_not() {
    let store = Arc::new(MemoryStore::new(100));
    let evidence = Arc::new(Kept::default());
    let c = Completer::new(store.clone(), evidence.clone(), ladder(), 5);
    let (unused, mut spent) = (challenge(0, true), challenge(0, true));
    spent.id = "c2".into();
    spent.digest = "dev1:spent".into();
    let mut grants = Vec::new();
    for ch in [&unused, &spent] {
        store.put_challenge(ch.clone()).await.unwrap();
        grants.push(
            c.complete(ch, &signed_in("aal3", NOW + 10, &ch.id), NOW + 20)
                .await
                .unwrap(),
        );
    }
    // The second grant is spent (as the pipeline does: consume, then claim its first use).
    assert!(store.consume(&grants[1], NOW + 30).await.unwrap());
    c.used(&grants[1], NOW + 30);
    // `used` claims off the approval's path: give its task a moment, then its claim is there
    // (a claim attempted now loses).
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        !store
            .claim_once(&format!("used:{}", grants[1].id), NOW + 1000, NOW + 31)
            .await
            .unwrap(),
        "the first use was claimed"
    );
    assert_eq!(c.sweep(NOW + 140 + EXPIRY_GRACE_SECS).await, 1);
    let records = evidence.records();
    let expired: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "grant_expired_unused")
        .collect();
    assert_eq!(expired.len(), 1, "{records:?}");
    assert_eq!(expired[0]["kind"], "expired");
    assert_eq!(expired[0]["result"]["grant_id"], grants[0].id.as_str());
    assert_eq!(expired[0]["result"]["satisfied_by"]["acr"], "aal3");
    assert_eq!(expired[0]["input"]["transaction"]["digest"], "dev1:txn");
}

#[tokio::test]
async fn one_sign_in_completes_one_challenge_on_every_path() {
    let c = completer();
    let first = challenge(300, true);
    let mut second = challenge(300, true);
    second.id = "c2".into();
    second.digest = "dev1:other-txn".into();
    for ch in [&first, &second] {
        c.grants().put_challenge(ch.clone()).await.unwrap();
    }
    // The OIDC callback and the grant API complete through `complete`: the sign-in is claimed.
    c.complete(&first, &assurance("aal3", NOW + 2), NOW + 3)
        .await
        .unwrap();
    assert_eq!(
        c.complete(&second, &assurance("aal3", NOW + 2), NOW + 4)
            .await,
        Err(CompletionError::AlreadyUsed),
        "the same iss, sub, auth_time and sid never approve another transaction"
    );
    let mut via_rfc9470 = assurance("aal3", NOW + 2);
    via_rfc9470.method = "rfc9470".into();
    assert_eq!(
        c.complete_once(&second, &via_rfc9470, NOW + 4, NOW + 600)
            .await,
        Err(CompletionError::AlreadyUsed),
        "nor through another completion path"
    );
    assert!(c.grants().challenge("c2", NOW + 4).await.unwrap().is_some());
    assert_eq!(
        c.grants()
            .find_grant("dev1:other-txn", NOW + 4)
            .await
            .unwrap(),
        None
    );
    // Another sign-in (another IdP session at the same second) is another event.
    c.complete(&second, &signed_in("aal3", NOW + 2, "sid-2"), NOW + 4)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_sign_in_stays_claimed_while_any_challenge_it_could_satisfy_is_open() {
    let c = completer();
    let ch = challenge(0, true);
    c.grants().put_challenge(ch.clone()).await.unwrap();
    let a = assurance("aal3", NOW + 2);
    c.complete(&ch, &a, NOW + 3).await.unwrap();
    // The latest challenge it could satisfy was issued at auth_time + skew and expires a
    // challenge lifetime (300 s) later.
    let last_open = NOW + 2 + 5 + 300;
    assert!(
        !c.grants()
            .claim_once(&a.event.name(), last_open + 1, last_open)
            .await
            .unwrap(),
        "still claimed"
    );
}
