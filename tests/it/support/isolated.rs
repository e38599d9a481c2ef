//! Tests that read process-global state — the Prometheus recorder every in-process sidecar of
//! this binary reports to — run in a child process of this test binary, alone, so that other
//! tests' traffic cannot move the counters they assert on.
//!
//! ```ignore
//! if !isolated::in_own_process("telemetry_metrics::metrics_follow_the_traffic") { return; }
//! ```

use std::process::Command;

/// Set in the child: the test body runs there.
const CHILD: &str = "STEPGUARD_TEST_ISOLATED";

/// True in the child (run the test's body); in the parent, runs `test` (its full path in this
/// binary, without the crate name) in a child process and returns false once it passed, or
/// panics with the child's output when it failed.
pub fn in_own_process(test: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads", "1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test} failed in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run in its own process (no such test?):\n{stdout}"
    );
    false
}
