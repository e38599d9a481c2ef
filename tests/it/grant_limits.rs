//! The in-memory store against the checks every store passes (the Redis stores run the same
//! ones in `redis_store.rs`, `redis_cluster.rs` and `redis_sentinel.rs`): the challenge-issuing
//! limits, and the lookups and revocations the step-up completions use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use stepguard::grant::MemoryStore;

#[tokio::test]
async fn the_memory_store_enforces_the_issue_limits() {
    let store = MemoryStore::new(1000);
    crate::support::records::assert_issue_limits(&store, "mem", 1_800_000_000).await;
}

#[tokio::test]
async fn the_memory_store_serves_the_completion_lookups() {
    let store = MemoryStore::new(1000);
    crate::support::records::assert_completion_lookups(&store, "mem", 1_800_000_000).await;
}

#[tokio::test]
async fn the_memory_store_checks_the_subject_before_counting_the_source_ip() {
    let store = MemoryStore::new(1000);
    crate::support::records::assert_subject_checked_before_source_ip(&store, "mem", 1_800_000_000)
        .await;
}

#[test]
fn the_memory_store_needs_room_for_at_least_one_entry_per_map() {
    use support::sidecar::{invalid_field, parse_grants};
    let r = parse_grants("grants:\n  store: memory\n  max_entries: 0\n");
    assert_eq!(invalid_field(r), "grants.max_entries");
    parse_grants("grants:\n  store: memory\n  max_entries: 1\n").unwrap();
}
