use super::keys::{Keys, hash_tag};
use super::*;

#[test]
fn keys_share_the_transaction_slot() {
    let keys = Keys::new("sg");
    assert_eq!(keys.grant("dev1:abc").unwrap(), "sg:{dev1:abc}:grant");
    assert_eq!(
        keys.challenge("dev1:abc", "c1").unwrap(),
        "sg:{dev1:abc}:challenge:c1"
    );
    assert_eq!(keys.challenge_index("c1").unwrap(), "sg:challenge:{c1}");
}

#[test]
fn foreign_key_parts_are_refused() {
    let keys = Keys::new("sg");
    for bad in ["", "a}b", "a{b", "a b", "a\nb", &"x".repeat(513)] {
        assert!(keys.grant(bad).is_none(), "{bad:?}");
        assert!(keys.challenge_index(bad).is_none(), "{bad:?}");
        assert!(keys.challenge("d", bad).is_none(), "{bad:?}");
    }
}

#[test]
fn ttls_are_positive_or_refused() {
    assert_eq!(ttl_ms(160, 100), Some(60_000));
    assert_eq!(ttl_ms(101, 100), Some(1_000));
    assert_eq!(ttl_ms(100, 100), None);
    assert_eq!(ttl_ms(99, 100), None);
    assert_eq!(ttl_ms(i64::MAX, i64::MIN), None);
}

#[test]
fn hash_tags_decide_how_issue_calls_are_split() {
    let keys = Keys::new("sg");
    assert_eq!(hash_tag(&keys.grant("dev1:abc").unwrap()), "dev1:abc");
    assert_eq!(hash_tag(&keys.attempts("dev1:abc").unwrap()), "dev1:abc");
    assert_eq!(
        hash_tag(&keys.open("subject:00ff").unwrap()),
        "subject:00ff"
    );
    assert_eq!(
        hash_tag(&keys.counter("subject:00ff", 7).unwrap()),
        "subject:00ff"
    );
    assert_eq!(hash_tag("no-tag"), "no-tag");
}
