//! The standard `process_*` metrics of Prometheus client libraries, read from `/proc/self` at
//! each scrape and appended to the exposition: CPU seconds, resident and virtual memory, open
//! and maximum file descriptors, threads and the start time. Linux only; elsewhere (or when
//! `/proc` cannot be read) the families are left out rather than reported as zero.

use std::fmt::Write as _;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`): 100 on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// What one read of `/proc/self` found.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    start_time_seconds: f64,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// The `process_*` families in text exposition format, or `""` when `/proc` is unreadable.
pub fn exposition() -> String {
    match read() {
        Some(process) => render(&process),
        None => String::new(),
    }
}

fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let mut process = parse_stat(&stat, boot)?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    process.resident_bytes = vm_rss_bytes(&status)?;
    process.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64);
    process.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| max_open_files(&limits));
    Some(process)
}

/// Fields of `/proc/self/stat` after the command name (which may hold spaces and parentheses).
fn parse_stat(stat: &str, boot_time: u64) -> Option<Process> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let (utime, stime) = (field(14)?, field(15)?);
    Some(Process {
        cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
        threads: field(20)?,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / TICKS_PER_SECOND,
        virtual_bytes: field(23)?,
        ..Process::default()
    })
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn vm_rss_bytes(status: &str) -> Option<u64> {
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn render(p: &Process) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
        );
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds.to_string(),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes.to_string(),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes.to_string(),
    );
    family(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        p.threads.to_string(),
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds.to_string(),
    );
    if let Some(open) = p.open_fds {
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open.to_string(),
        );
    }
    if let Some(max) = p.max_fds {
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max.to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (step guard) S 1 4242 4242 0 -1 4194560 2210 0 0 0 150 25 0 0 20 0 \
                        9 0 123400 987654321 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 \
                        17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let p = parse_stat(STAT, 1_700_000_000).unwrap();
        assert_eq!(p.cpu_seconds, 1.75);
        assert_eq!(p.threads, 9);
        assert_eq!(p.start_time_seconds, 1_700_001_234.0);
        assert_eq!(p.virtual_bytes, 987_654_321);
    }

    #[test]
    fn status_limits_and_boot_time() {
        assert_eq!(
            vm_rss_bytes("Name:\tx\nVmRSS:\t   2048 kB\nThreads:\t9\n"),
            Some(2_097_152)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1_048_576));
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_stat("garbage", 0), None);
    }

    #[test]
    fn this_process_is_read() {
        let text = exposition();
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
        let p = read().unwrap();
        assert!(p.resident_bytes > 0 && p.threads >= 1 && p.open_fds.unwrap() > 0);
    }
}
