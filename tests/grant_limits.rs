//! The challenge-issuing limits of the in-memory store (the Redis stores run the same checks in
//! `redis_store.rs`, `redis_cluster.rs` and `redis_sentinel.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use stepguard::grant::MemoryStore;

#[tokio::test]
async fn the_memory_store_enforces_the_issue_limits() {
    let store = MemoryStore::new(1000);
    support::records::assert_issue_limits(&store, "mem", 1_800_000_000).await;
}
