use std::sync::Arc;

use super::*;

/// The contract every store keeps, on the memory store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_keeps_the_store_contract() {
    contract::assert_all(Arc::new(MemoryStore::new(1_000)), "mem", 1_800_000_000).await;
}

#[test]
fn windows_are_fixed_and_never_empty() {
    assert_eq!(window_of(60, 1_800_000_010), (30_000_000, 1_800_000_060));
    assert_eq!(window_of(60, -1), (-1, 0));
    assert_eq!(window_of(0, 7), (7, 8), "a zero window is one second");
}
