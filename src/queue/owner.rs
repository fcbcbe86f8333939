//! Who holds a claim. Several postman processes, possibly on several hosts
//! sharing storage, may work on one queue; each claims a message by moving
//! it to `<domain>/.active/<owner>/`. The owner names the host, the process
//! and the process's start time, so that a restarted postman can tell the
//! claims of its own dead predecessors (to recover them) from those of a
//! live process or of another host (to leave alone).

use std::fs;

/// This process's owner string: `<hostname>.<pid>.<start time in ticks>`.
pub fn this_process() -> String {
    let pid = std::process::id();
    format!("{}.{pid}.{}", host(), start_time(pid).unwrap_or(0))
}

/// Whether the claims of `owner` may be taken back: the owner is a process
/// of this host that no longer runs (or whose pid now belongs to another
/// process). Claims of other hosts are theirs to recover.
pub fn is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, '.');
    let (Some(start), Some(pid), Some(host_name)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if host_name != host() {
        return false;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    start_time(pid) != Some(start)
}

/// The machine's name, made safe as one path component.
fn host() -> String {
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    name.replace(['/', '\0'], "_")
}

/// A process's start time in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` when there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_pid_is_dead() {
        let me = this_process();
        assert!(!is_dead(&me), "{me} is running");
        let host = host();
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        let gone = format!("{host}.4194304999.1");
        assert!(is_dead(&gone), "{gone} cannot be running");
        let reused = format!("{host}.{}.1", std::process::id());
        assert!(
            is_dead(&reused),
            "{reused}: the pid runs, but started at another time"
        );
    }

    #[test]
    fn other_hosts_and_garbage_are_never_judged_dead() {
        for owner in ["other-host.example.1.1", "nonsense", "", "a.b.c"] {
            assert!(!is_dead(owner), "{owner:?} must be left alone");
        }
    }
}
