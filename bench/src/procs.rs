//! The processes an experiment starts and measures: where the host agent and dataplane
//! programs are, and how much CPU time a process has used (`/proc/<pid>/stat`).

use naam_deploy::{Binaries, DeployError};
use std::path::Path;

/// How to start the host agent and the dataplane: the running program itself when it is the
/// `naam-rs` binary (which runs every role as a subcommand), else the two programs next to it
/// (built first when missing, as in `cargo test`).
pub fn binaries() -> Result<Binaries, DeployError> {
    if let Ok(exe) = std::env::current_exe() {
        if is_root_program(&exe) {
            return Ok(Binaries::subcommands(exe));
        }
    }
    Binaries::locate_or_build()
}

fn is_root_program(exe: &Path) -> bool {
    exe.file_stem().and_then(|s| s.to_str()) == Some("naam-rs")
}

/// Where deployments started by the experiments write their logs: `$NAAM_BENCH_LOG_DIR`
/// when set (else the logs are discarded).
pub fn log_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("NAAM_BENCH_LOG_DIR").map(std::path::PathBuf::from)
}

/// User and system CPU time of a process, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

impl CpuTicks {
    pub fn total(&self) -> u64 {
        self.user + self.system
    }
}

/// Parses the text of `/proc/<pid>/stat`: `utime` and `stime` are fields 14 and 15 (proc(5)),
/// counted after the command name, which is in parentheses and may itself contain spaces and
/// parentheses (so the fields start after the *last* `)`). The times cover every thread.
pub fn parse_stat(text: &str) -> Option<CpuTicks> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (field 3) ... utime (14), stime (15).
    let user = fields.nth(11)?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; Linux reports USER_HZ, 100 on
/// every common architecture, which is the fallback).
pub fn clock_ticks_per_s() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// CPU time of process `pid` so far, or `None` when it cannot be read.
pub fn cpu_ticks(pid: u32) -> Option<CpuTicks> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Seconds of CPU time between two readings.
pub fn cpu_seconds(before: CpuTicks, after: CpuTicks) -> f64 {
    after.total().saturating_sub(before.total()) as f64 / clock_ticks_per_s() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_the_last_parenthesis() {
        // A real line's shape, with a command name holding spaces and a ')'.
        let line = "4242 (naam host) agent) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    731 52 0 0 20 0 5 0 123456 1000000 500 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(CpuTicks {
                user: 731,
                system: 52
            })
        );
        assert_eq!(parse_stat("12 (x) S 1 2"), None, "too few fields");
        assert_eq!(parse_stat("no parenthesis"), None);
        assert_eq!(
            parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 u 5 0"),
            None,
            "non-numeric utime"
        );
    }

    #[test]
    fn this_process_uses_cpu_time() {
        let before = cpu_ticks(std::process::id()).expect("own /proc stat");
        // Spin until the next tick is charged (bounded: a loaded machine gives us a share).
        let start = std::time::Instant::now();
        let mut after = before;
        let mut x = 0u64;
        while after == before && start.elapsed() < std::time::Duration::from_secs(5) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            after = cpu_ticks(std::process::id()).unwrap();
        }
        assert!(after.total() > before.total(), "{before:?} {after:?}");
        assert!(cpu_seconds(before, after) > 0.0);
        assert_eq!(cpu_seconds(after, before), 0.0, "never negative");
    }
}
