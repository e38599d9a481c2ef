//! What the soak reads of the sidecar besides its RSS: where the resident memory is
//! (`/proc/<pid>/smaps_rollup`) and what its own caches hold (`/metrics`).

use std::time::Duration;

use crate::support::envoy::http_get;

/// Resident memory by kind, KiB (`smaps_rollup`): anonymous (the heap, stacks), of which in
/// transparent huge pages, and file-backed (the binary and libraries: `Rss - Anonymous`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory {
    pub anon_kib: u64,
    pub huge_kib: u64,
    pub file_kib: u64,
}

pub fn memory(pid: u32) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (rss, anon) = (field("Rss"), field("Anonymous"));
    Memory {
        anon_kib: anon,
        huge_kib: field("AnonHugePages"),
        file_kib: rss.saturating_sub(anon),
    }
}

/// A gauge's value from the sidecar's `/metrics` (`None` when it is not there, or the scrape
/// failed).
pub fn gauge(http: u16, name: &str) -> Option<u64> {
    let (status, body) = http_get(http, "/metrics", Duration::from_secs(2)).ok()?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}
