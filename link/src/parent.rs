//! A daemon started by another program (the local deployment, a test, a benchmark) stops when
//! that program is gone: otherwise a starter killed with SIGKILL, which cannot clean up, left
//! a host agent and a busy-polling dataplane running for good, holding their ports and a
//! core. Both ends of the link run it when given `--parent-pid`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the parent is looked at: a stopped starter's daemons follow within this.
pub const PARENT_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Writes `line` to stdout for whoever started this process (the addresses it serves),
/// ignoring a closed or full stdout: `println!` panics then, which killed a daemon already
/// serving (probe 20: `naam-host-agent --metrics-addr … | true`); a starter that does not
/// read the line does not need it.
pub fn tell_starter(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Ignores SIGUSR1 and SIGUSR2, whose default action ends the process: an operator who sends
/// one expecting a log reopen or a status dump (as other daemons do) killed the host agent
/// without its snapshot and the dataplane mid-request, with nothing in either log (probe
/// 22). Neither daemon uses them.
pub fn ignore_user_signals() -> std::io::Result<()> {
    crate::sys::ignore_signal(libc::SIGUSR1)?;
    crate::sys::ignore_signal(libc::SIGUSR2)
}

/// Sets `stop` (as SIGTERM does) once process `parent` is no longer this process's parent —
/// it exited and this one was handed to init or a subreaper — or at once when it already is
/// not because it is gone (it died before this process looked). Watches from a thread of its
/// own, which ends with `stop`. A `parent` that is no process id, or a process that lives and
/// is not this one's parent (a mistyped pid), is refused here: it would stop the daemon at
/// once, and exit 0, for no reason the operator could see.
pub fn stop_without_parent(
    parent: u32,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    if parent == 0 {
        return Err(invalid("--parent-pid 0 is no process".into()));
    }
    let now = std::os::unix::process::parent_id();
    if now != parent && alive(parent) {
        return Err(invalid(format!(
            "--parent-pid {parent}: that process is not this one's parent (process {now} is)"
        )));
    }
    std::thread::Builder::new()
        .name("naam-parent".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let now = std::os::unix::process::parent_id();
                if now != parent {
                    tracing::warn!(
                        parent,
                        now,
                        "the process that started this one is gone: stopping"
                    );
                    stop.store(true, Ordering::Release);
                    return;
                }
                std::thread::sleep(PARENT_CHECK_EVERY);
            }
        })
}

/// Whether process `pid` runs: it has a `/proc` entry and is no zombie (a starter killed
/// outright stays one until its own parent reaps it, and is gone for this purpose).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`: the command may hold spaces and parentheses, so the state is
    // the first field after the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_when_the_parent_is_not_the_one_named() {
        let stop = Arc::new(AtomicBool::new(false));
        let me = std::os::unix::process::parent_id();
        // The real parent: nothing happens until `stop` is set by someone else.
        let t = stop_without_parent(me, stop.clone()).unwrap();
        std::thread::sleep(PARENT_CHECK_EVERY * 2);
        assert!(!stop.load(Ordering::Acquire));
        stop.store(true, Ordering::Release);
        t.join().unwrap();
        // A process that is gone named (the starter died before this one looked): stopped
        // at the first look.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let t = stop_without_parent(gone.id(), stop.clone()).unwrap();
        t.join().unwrap();
        assert!(stop.load(Ordering::Acquire));
        // A zombie (killed, not yet reaped) is gone too.
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        while !std::fs::read_to_string(format!("/proc/{}/stat", zombie.id()))
            .is_ok_and(|s| s.contains(") Z"))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!alive(zombie.id()));
        let stop = Arc::new(AtomicBool::new(false));
        stop_without_parent(zombie.id(), stop.clone())
            .unwrap()
            .join()
            .unwrap();
        assert!(stop.load(Ordering::Acquire));
        zombie.wait().unwrap();
        assert!(alive(std::process::id()));
        // A live process that is not the parent, or no process at all: refused.
        for pid in [std::process::id(), 0] {
            let stop = Arc::new(AtomicBool::new(false));
            let e = stop_without_parent(pid, stop.clone()).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{pid}: {e}");
            assert!(!stop.load(Ordering::Acquire));
        }
    }
}
