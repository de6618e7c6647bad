//! Child processes of the benchmark: pinned to a core, their standard output read line by line
//! in a thread, bounded in time, and killed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A running child. Dropping it kills it (SIGKILL) and reaps it.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

impl Proc {
    /// Starts `cmd` with its standard output piped (and read), standard input piped (kept
    /// open) and standard error going to `stderr_to` (a log file) or discarded.
    pub fn spawn(name: &str, mut cmd: Command, stderr_to: Option<&Path>) -> Result<Proc, String> {
        let err = match stderr_to {
            Some(p) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map(Stdio::from)
                .map_err(|e| format!("{}: {e}", p.display()))?,
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {name} ({:?}): {e}", cmd.get_program()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for a line for which `want` is true and returns it.
    pub fn wait_line(
        &mut self,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if want(&l) {
                        return Ok(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{}: no expected output within {timeout:?}",
                        self.name
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    return Err(format!(
                        "{} ended ({}) without the expected output; it said: {:?}",
                        self.name,
                        status.map_or("?".into(), |s| s.to_string()),
                        self.seen.last()
                    ));
                }
            }
        }
    }

    /// Writes `text` to the child's standard input.
    pub fn say(&mut self, text: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("{}: writing its input: {e}", self.name))
    }

    /// Waits up to `timeout` for the child to exit; returns its status and all its output.
    /// On time-out the child is killed and that is an error.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(ExitStatus, String), String> {
        let end = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    // The reader thread ends at EOF; take what it still has.
                    while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                        self.seen.push(l);
                    }
                    return Ok((status, self.seen.join("\n")));
                }
                Ok(None) if Instant::now() < end => {
                    while let Ok(l) = self.lines.try_recv() {
                        self.seen.push(l);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("{} did not finish within {timeout:?}", self.name));
                }
                Err(e) => return Err(format!("{}: {e}", self.name)),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `cmd` run on CPU `core` only (through `taskset`).
pub fn pinned(core: u32, program: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(core.to_string()).arg(program);
    c
}

/// Moves every thread of running process `pid` to CPU `core`.
pub fn pin_process(pid: u32, core: u32) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "taskset -a -p -c {core} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Moves the threads of process `pid` named `name` (`/proc/PID/task/TID/comm`) to CPU
/// `core`; returns how many there were.
pub fn pin_threads(pid: u32, name: &str, core: u32) -> Result<usize, String> {
    let tasks =
        std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| format!("{pid}: {e}"))?;
    let mut n = 0;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let tid = t.file_name().to_string_lossy().into_owned();
        let ok = Command::new("taskset")
            .args(["-p", "-c", &core.to_string(), &tid])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!("taskset -p -c {core} {tid} failed"));
        }
        n += 1;
    }
    Ok(n)
}

/// Waits up to `timeout` for a listening abstract Unix socket named `@name` (how net_memif
/// creates its control socket by default) to appear in `/proc/net/unix`.
pub fn wait_for_abstract_socket(name: &str, timeout: Duration) -> Result<(), String> {
    let end = Instant::now() + timeout;
    let want = format!("@{name}");
    loop {
        let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        if table
            .lines()
            .any(|l| l.split_whitespace().last() == Some(want.as_str()))
        {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!("no socket {want} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes what a DPDK process with `--file-prefix=prefix` leaves behind.
pub fn remove_dpdk_runtime(prefix: &str) {
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_awaited_and_children_die_with_their_guard() {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "echo one; echo ready two; read x; echo got $x; exec sleep 60",
        ]);
        let mut p = Proc::spawn("sh", c, None).unwrap();
        let l = p
            .wait_line(Duration::from_secs(5), |l| l.starts_with("ready"))
            .unwrap();
        assert_eq!(l, "ready two");
        p.say("hello\n").unwrap();
        p.wait_line(Duration::from_secs(5), |l| l == "got hello")
            .unwrap();
        let pid = p.id();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(p);
        // Reaped: the pid no longer names our child (it may only be reused much later).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "{stat}");
    }

    #[test]
    fn abstract_sockets_are_found() {
        let name = format!("/tmp/naam-mb-test-{}.sock", std::process::id());
        let e = wait_for_abstract_socket(&name, Duration::from_millis(30)).unwrap_err();
        assert!(e.contains(&name));
        use std::os::linux::net::SocketAddrExt;
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let _l = std::os::unix::net::UnixListener::bind_addr(&sa).unwrap();
        wait_for_abstract_socket(&name, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn exit_is_awaited_with_all_output_and_overruns_are_killed() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo a; echo b; exit 3"]);
        let mut p = Proc::spawn("sh", c, None).unwrap();
        let (status, out) = p.wait_exit(Duration::from_secs(5)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(out, "a\nb");

        let mut c = Command::new("sleep");
        c.arg("60");
        let mut p = Proc::spawn("sleep", c, None).unwrap();
        let e = p.wait_exit(Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("did not finish"));
    }
}
