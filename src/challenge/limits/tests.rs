use super::*;

#[test]
fn sources_are_limited_per_ipv4_address_and_per_ipv6_64() {
    assert_eq!(source_tag("10.0.0.7"), "ip:10.0.0.7");
    assert_eq!(source_tag("::ffff:10.0.0.7"), "ip:10.0.0.7", "IPv4-mapped");
    for one_client in ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"] {
        assert_eq!(source_tag(one_client), "ip:2001:db8:1:2::/64");
    }
    assert_eq!(source_tag("2001:db8:1:3::1"), "ip:2001:db8:1:3::/64");
    assert_eq!(source_tag("::1"), "ip:0:0:0:0::/64");
    assert_eq!(source_tag("not-an-address"), "ip:not-an-address");
}

#[tokio::test]
async fn the_memory_store_enforces_the_issue_limits() {
    let store = crate::grant::MemoryStore::new(1000);
    contract::assert_issue_limits(&store, "mem", 1_800_000_000).await;
}

#[tokio::test]
async fn the_memory_store_checks_the_subject_before_counting_the_source_ip() {
    let store = crate::grant::MemoryStore::new(1000);
    contract::assert_subject_checked_before_source_ip(&store, "mem", 1_800_000_000).await;
}

#[tokio::test]
async fn an_expired_challenge_is_refused_before_anything_is_counted() {
    let store = crate::grant::MemoryStore::new(1000);
    let now = 1_800_000_000;
    let c = crate::grant::contract::challenge("c-late", "dev1:late", now - 300);
    let limits = IssueLimits {
        rates: vec![Rate {
            scope: RateScope::Subject,
            name: "subject:late".into(),
            window: 60,
            max: 1,
        }],
        ..Default::default()
    };
    assert!(issue(&store, c.clone(), &limits, now).await.is_err());
    let again = crate::grant::contract::challenge("c-on-time", "dev1:late", now);
    assert_eq!(
        issue(&store, again, &limits, now).await,
        Ok(Issued::Open { attempts: 1 }),
        "the refused one counted nothing"
    );
}
