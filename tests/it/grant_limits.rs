//! The in-memory store's config. (The checks every store passes — `grant::contract` and
//! `challenge::limits::contract` — run on the memory store as the crate's unit tests, and on
//! Redis in `redis_store.rs`, `redis_cluster.rs` and `redis_sentinel.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

#[test]
fn the_memory_store_needs_room_for_at_least_one_entry_per_map() {
    use support::sidecar::{invalid_field, parse_grants};
    let r = parse_grants("grants:\n  store: memory\n  max_entries: 0\n");
    assert_eq!(invalid_field(r), "grants.max_entries");
    parse_grants("grants:\n  store: memory\n  max_entries: 1\n").unwrap();
}
