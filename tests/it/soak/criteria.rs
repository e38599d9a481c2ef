//! The soak's pass criteria: computed from the samples, the clients' answers and the evidence,
//! printed (for `docs/benchmarks.md`), then asserted.

use super::{CAP, SEGMENT, SUBJECTS, Sample, Seen, Shapes};
use crate::support::evidence_tail::Audit;

pub struct Report<'a> {
    pub secs: u64,
    /// The paced request rate the clients aimed at (requests/s).
    pub rate: u64,
    pub samples: &'a [Sample],
    pub seen: &'a Seen,
    pub audit: &'a Audit,
    /// Redis restarts, challenge storms, policy reloads.
    pub events: (u64, u64, u64),
    /// Redis keys by shape at the last sample.
    pub shapes: &'a Shapes,
    pub verified: bool,
    pub verify_output: String,
}

/// max(A), max(B) of `f` over the samples after warm-up, split in two halves.
fn halves(samples: &[Sample], warm: u64, f: impl Fn(&Sample) -> Option<u64>) -> (u64, u64) {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm).collect();
    let mid = after.len() / 2;
    let max = |part: &[&Sample]| part.iter().filter_map(|s| f(s)).max().unwrap_or(0);
    (max(&after[..mid]), max(&after[mid..]))
}

/// Per second over each half (A from the first sample after warm-up to the first of B, B from
/// there to the last), of a counter `f` that only grows.
fn rates(samples: &[Sample], warm: u64, f: impl Fn(&Sample) -> u64) -> (f64, f64) {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm).collect();
    if after.len() < 3 {
        return (0.0, 0.0);
    }
    let (first, mid, last) = (after[0], after[after.len() / 2], after[after.len() - 1]);
    let per_s = |x: &Sample, y: &Sample| (f(y) - f(x)) as f64 / (y.at - x.at).max(1) as f64;
    (per_s(first, mid), per_s(mid, last))
}

impl Report<'_> {
    pub fn print_and_assert(&self) {
        let warm = (self.secs / 3).max(60).min(self.secs / 2);
        let s = self.samples;
        let (rss_a, rss_b) = halves(s, warm, |s| Some(s.rss_kib));
        let (fd_a, fd_b) = halves(s, warm, |s| Some(s.files as u64));
        let (keys_a, keys_b) = halves(s, warm, |s| s.keys);
        let (spool_a, spool_b) = halves(s, warm, |s| Some(s.spool));
        let (anon_a, anon_b) = halves(s, warm, |s| Some(s.memory.anon_kib));
        let (huge_a, huge_b) = halves(s, warm, |s| Some(s.memory.huge_kib));
        let (cache_a, cache_b) = halves(s, warm, |s| s.cache);
        let (rate_a, rate_b) = rates(s, warm, |s| s.answered);
        let (fresh_a, fresh_b) = rates(s, warm, |s| s.minted);
        let (decided_a, decided_b) = rates(s, warm, |s| s.decisions);
        let missed = s.last().map_or(0, |s| s.missed);
        let untimed = s.iter().filter_map(|s| s.untimed).max().unwrap_or(0);
        let long = s.iter().filter_map(|s| s.long_keys).max().unwrap_or(0);
        let longest = self.shapes.values().map(|v| v.1).max().unwrap_or(0);
        let spool_max = s.iter().map(|s| s.spool).max().unwrap_or(0);
        let (restarts, storms, reloads) = self.events;
        let a = self.audit;
        let seen = self.seen;
        let missing: Vec<&String> = seen
            .approvals
            .iter()
            .filter(|id| !a.allows.contains(*id))
            .collect();
        let public_ok = seen.answers.get(&("public", 200)).copied().unwrap_or(0);
        let public_all: u64 = seen
            .answers
            .iter()
            .filter(|((k, _), _)| *k == "public")
            .map(|(_, n)| n)
            .sum();

        // A short run (the 2-minute one in scripts/test) is still filling the allocator's
        // per-thread arenas: it catches gross growth only.
        let (share, floor) = match self.secs {
            0..300 => (4, 32 * 1024),
            _ => (10, 8 * 1024),
        };
        let rss_ok = rss_b <= rss_a + (rss_a / share).max(floor);
        let fd_ok = fd_b <= fd_a + 16;
        // The load was what it was meant to be in both halves: RSS is compared at one rate.
        let target = self.rate as f64;
        let rate_ok = rate_a >= 0.9 * target && rate_b >= 0.9 * target;
        // One first-use claim per grant consumed — at most one per stepped-up request, whatever
        // it was answered (a consume whose decision then ran out of budget is not an approval)
        // — and two known-network marks per subject.
        let stepped_up: u64 = seen
            .answers
            .iter()
            .filter(|((k, _), _)| *k == "stepped_up")
            .map(|(_, n)| n)
            .sum();
        let long_bound = stepped_up + 2 * SUBJECTS + 100;
        let keys_ok = keys_b <= keys_a + keys_a / 4 + 100
            && untimed == 0
            && long <= long_bound
            && longest <= 2 * 86_400;
        let spool_ok = spool_max <= CAP && spool_b <= spool_a + SEGMENT;
        let public_share_ok = public_all > 0 && public_ok * 100 >= public_all * 99;
        let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };

        eprintln!("\n==== soak: {} s, warm-up {warm} s ====", self.secs);
        eprintln!(
            "events: {restarts} Redis restarts, {storms} challenge storms, {reloads} policy reloads"
        );
        eprintln!(
            "samples (t s, RSS MiB, anonymous MiB, of it huge pages MiB, file-backed MiB, cached tokens, \
             open files, Redis keys short-lived + long-lived, spool KiB, threads, requests/s, decisions/s, new tokens/s):"
        );
        for (i, x) in s.iter().enumerate() {
            let previous = i.checked_sub(1).map(|p| &s[p]);
            let per_s = |f: fn(&Sample) -> u64| {
                previous.map_or(0, |p| (f(x) - f(p)) / (x.at - p.at).max(1))
            };
            let mib = |kib: u64| kib as f64 / 1024.0;
            eprintln!(
                "  {:>5} {:>7.1} {:>7.1} {:>5.1} {:>5.1} {:>6} {:>4} {:>6} + {:>6} {:>6} {:>4} {:>5} {:>5} {:>4}",
                x.at,
                mib(x.rss_kib),
                mib(x.memory.anon_kib),
                mib(x.memory.huge_kib),
                mib(x.memory.file_kib),
                x.cache.map_or("-".into(), |c| c.to_string()),
                x.files,
                x.keys.map_or("-".into(), |k| k.to_string()),
                x.long_keys.map_or("-".into(), |k| k.to_string()),
                x.spool / 1024,
                x.threads,
                per_s(|s| s.answered),
                per_s(|s| s.decisions),
                per_s(|s| s.minted),
            );
        }
        eprintln!("Redis keys at the last sample (shape: keys, longest TTL s):");
        for (shape, (n, ttl)) in self.shapes {
            eprintln!("  {shape}: {n}, {ttl}");
        }
        eprintln!("answers (kind, status: count):");
        for ((kind, status), n) in &seen.answers {
            eprintln!("  {kind:<10} {status}: {n}");
        }
        eprintln!(
            "load per half (A, B): requests {rate_a:.0}/s, {rate_b:.0}/s (target {}/s; {missed} slots dropped in all); \
             decisions {decided_a:.0}/s, {decided_b:.0}/s; new tokens {fresh_a:.1}/s, {fresh_b:.1}/s",
            self.rate
        );
        eprintln!(
            "memory per half (max A, max B): anonymous {:.1}, {:.1} MiB (huge pages {:.1}, {:.1} MiB); cached tokens {}, {}",
            anon_a as f64 / 1024.0,
            anon_b as f64 / 1024.0,
            huge_a as f64 / 1024.0,
            huge_b as f64 / 1024.0,
            cache_a,
            cache_b
        );
        eprintln!("criteria:");
        eprintln!(
            "  [{}] load held: {rate_a:.0} and {rate_b:.0} requests/s in A and B (>= 90% of {}/s)",
            pass(rate_ok),
            self.rate
        );
        eprintln!(
            "  [{}] RSS flat: max A {:.1} MiB, max B {:.1} MiB (B <= A + max({}%, {} MiB))",
            pass(rss_ok),
            rss_a as f64 / 1024.0,
            rss_b as f64 / 1024.0,
            100 / share,
            floor / 1024
        );
        eprintln!(
            "  [{}] open files flat: max A {fd_a}, max B {fd_b} (B <= A + 16)",
            pass(fd_ok)
        );
        eprintln!(
            "  [{}] Redis keys flat: short-lived (TTL <= 600 s) max A {keys_a}, max B {keys_b} (B <= 1.25 A + 100); \
             long-lived max {long} (<= stepped-up requests + 2 per subject + 100 = {long_bound}), longest TTL {longest} s (<= 2 days); \
             keys without TTL: {untimed}",
            pass(keys_ok)
        );
        eprintln!(
            "  [{}] spool bounded and flat: max {} KiB (cap {} KiB), max A {} KiB, max B {} KiB (B <= A + one segment)",
            pass(spool_ok),
            spool_max / 1024,
            CAP / 1024,
            spool_a / 1024,
            spool_b / 1024
        );
        eprintln!(
            "  [{}] approvals justified: {} records read, {} decisions, {} approvals ({} session, {} grant), {} unjustified, {} gaps",
            pass(a.unjustified.is_empty() && a.gaps.is_empty()),
            a.records,
            a.decisions,
            a.allows.len(),
            a.session_allows,
            a.grant_allows,
            a.unjustified.len(),
            a.gaps.len()
        );
        eprintln!(
            "  [{}] client-seen approvals recorded: {} seen, {} without a record; wrong 200s: {}",
            pass(missing.is_empty() && seen.wrong.is_empty()),
            seen.approvals.len(),
            missing.len(),
            seen.wrong.len()
        );
        eprintln!(
            "  [{}] chain verifies (stepguard audit verify): {}",
            pass(self.verified),
            self.verify_output.trim().replace('\n', " | ")
        );
        eprintln!(
            "  [{}] public routes pass: {public_ok} of {public_all} (>= 99%); transport errors: {}",
            pass(public_share_ok),
            seen.transport_errors
        );
        eprintln!(
            "  policy revisions seen in the records: {}",
            a.revisions.len()
        );

        assert!(
            rate_ok,
            "the load fell short of its rate: RSS not comparable"
        );
        assert!(rss_ok, "RSS grew");
        assert!(fd_ok, "open files grew");
        assert!(keys_ok, "Redis keys grew, or some have no TTL");
        assert!(spool_ok, "the spool grew past its cap or kept growing");
        assert!(a.gaps.is_empty(), "records missed: {:?}", a.gaps);
        assert!(
            a.unjustified.is_empty(),
            "unjustified approvals: {:?}",
            a.unjustified
        );
        assert!(
            missing.is_empty(),
            "approvals without a record: {missing:?}"
        );
        assert!(seen.wrong.is_empty(), "wrong answers: {:?}", seen.wrong);
        assert!(self.verified, "audit verify: {}", self.verify_output);
        assert!(public_share_ok, "public routes failed");
        assert!(
            a.session_allows > 0 && a.grant_allows > 0,
            "both kinds of approval happened"
        );
        if self.secs >= 90 {
            assert!(restarts >= 1 && storms >= 2 && reloads >= 1);
            assert!(a.revisions.len() >= 2, "the policy was reloaded");
        }
    }
}
