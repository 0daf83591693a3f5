//! Child processes: signals, waiting for an exit with a deadline, and `/proc` readers.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Sends `signal` (SIGTERM, SIGINT, ...) to a child that has not been waited for.
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill() on the pid of a child we own and have not reaped, so the pid is still ours.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({}, {signal})", child.id());
}

/// Waits up to `within` for the child to exit; `None` if it is still running then.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `kB` field of /proc/PID/status (`"VmRSS:"`, `"VmHWM:"`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// A /proc `stat` line's command name and the fields after it, field 3 (the state) first: the
/// name is in parentheses and may hold spaces and parentheses itself.
pub fn stat_name_and_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    let (head, rest) = stat.rsplit_once(')')?;
    Some((head.split_once('(')?.1, rest.split_whitespace().collect()))
}

/// Minor page faults of a process so far (/proc/PID/stat, field 10): pages it touched that
/// were not resident, among them memory its allocator gave back to the kernel and reused.
pub fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat_name_and_fields(&stat)
        .and_then(|(_, fields)| fields.get(7)?.parse().ok())
        .unwrap_or_else(|| panic!("no minflt in /proc/{pid}/stat"))
}
