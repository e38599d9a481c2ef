//! The store-backed context signals of one sensitive request, read in one store call: the
//! subject's velocity (a fixed-window counter without a max) and the known-network marks.
//! A new store-backed signal is one more counter or mark here.

use crate::grant::{Counter, GrantError, GrantStore};

/// Counts the request in the `velocity` counter (`window` seconds) and reads the `seen` marks:
/// (requests in this window, whether each mark is set). One round trip on Redis.
pub async fn read<const N: usize>(
    store: &dyn GrantStore,
    velocity: &str,
    window: i64,
    seen: [&str; N],
    now: i64,
) -> Result<(u64, [bool; N]), GrantError> {
    let counter = Counter {
        name: velocity,
        window,
        max: None,
    };
    let tally = store.tally(&[counter], &seen, now).await?;
    let count = tally.counts.first().copied().unwrap_or(0);
    let mut marks = [false; N];
    for (mark, set) in marks.iter_mut().zip(tally.marks) {
        *mark = set;
    }
    Ok((count, marks))
}
