//! Reading a server's figures from `/proc`: resident memory, user and system
//! CPU time and write system calls, summed over all of its processes (one
//! `herald` per node; the nginx master and its workers for Nchan).

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

/// Clock ticks per second in `/proc/PID/stat`. Linux fixes `USER_HZ` at 100
/// for user space whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// One sample of a set of processes.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    /// Sum of `VmRSS`, in bytes.
    pub rss: u64,
    /// Sum of `utime` and of `stime`, in clock ticks.
    pub user_ticks: u64,
    pub sys_ticks: u64,
    /// Sum of `syscw` from `/proc/PID/io`: calls to write(2), writev(2) and
    /// the like (not sendmsg, which Herald writes with: it counts its own
    /// writes on `/metrics`), the closest generic count of socket writes.
    pub write_calls: u64,
}

/// What a set of processes spent between two samples.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Usage {
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub write_calls: u64,
    pub rss_before: u64,
    pub rss_after: u64,
}

impl Usage {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// Samples every process in `pids`.
pub fn sample(pids: &[u32]) -> anyhow::Result<Sample> {
    let at = Instant::now();
    let mut total = Sample {
        at,
        rss: 0,
        user_ticks: 0,
        sys_ticks: 0,
        write_calls: 0,
    };
    for &pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("process {pid} is gone"))?;
        total.rss += parse_vm_rss(&status).context("no VmRSS line")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let (user, sys) = parse_cpu(&stat).context("unreadable /proc/PID/stat")?;
        total.user_ticks += user;
        total.sys_ticks += sys;
        // /proc/PID/io needs ptrace rights over the process; without them the
        // write count is simply missing (zero).
        if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
            total.write_calls += parse_io_field(&io, "syscw").unwrap_or(0);
        }
    }
    Ok(total)
}

impl Sample {
    /// What was spent from `before` to `self`.
    pub fn since(&self, before: &Sample) -> Usage {
        Usage {
            wall_s: self.at.duration_since(before.at).as_secs_f64(),
            user_s: self.user_ticks.saturating_sub(before.user_ticks) as f64 / TICKS_PER_SECOND,
            sys_s: self.sys_ticks.saturating_sub(before.sys_ticks) as f64 / TICKS_PER_SECOND,
            write_calls: self.write_calls.saturating_sub(before.write_calls),
            rss_before: before.rss,
            rss_after: self.rss,
        }
    }
}

/// The number of threads of process `pid` (`Threads` in `/proc/PID/status`).
pub fn threads(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    parse_status_number(&status, "Threads:").context("no Threads line")
}

/// The children of `parent` (for nginx: its worker processes).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_ppid(&stat))
                == Some(parent)
        })
        .collect()
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    Some(parse_status_number(status, "VmRSS:")? * 1024)
}

/// The number after `key` in `/proc/PID/status` (in kB for the `Vm…` lines).
fn parse_status_number(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The fields after the command name, which may itself contain spaces and
/// parentheses: everything after the last `)`. The first of them is field 3
/// (`state`) of proc(5).
fn fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// `(utime, stime)`: fields 14 and 15 of proc(5).
fn parse_cpu(stat: &str) -> Option<(u64, u64)> {
    let fields = fields_after_comm(stat)?;
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// `ppid`: field 4 of proc(5).
fn parse_ppid(stat: &str) -> Option<u32> {
    fields_after_comm(stat)?.get(1)?.parse().ok()
}

fn parse_io_field(io: &str, key: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\therald\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_status_number(status, "Threads:"), Some(3));
    }

    #[test]
    fn reads_cpu_times_past_an_odd_command_name() {
        let stat = "4242 (nginx: (worker) x) S 4241 4241 4241 0 -1 4194624 \
                    120 0 0 0 731 266 0 0 20 0 1 0 1000 0 0";
        assert_eq!(parse_cpu(stat), Some((731, 266)));
        assert_eq!(parse_ppid(stat), Some(4241));
        assert_eq!(parse_cpu("garbage"), None);
    }

    #[test]
    fn reads_write_calls() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 44\nread_bytes: 0\n";
        assert_eq!(parse_io_field(io, "syscw"), Some(44));
        assert_eq!(parse_io_field(io, "nope"), None);
    }

    #[test]
    fn usage_between_samples() {
        let at = Instant::now();
        let before = Sample {
            at,
            rss: 10_000,
            user_ticks: 100,
            sys_ticks: 50,
            write_calls: 7,
        };
        let after = Sample {
            at: at + std::time::Duration::from_secs(2),
            rss: 30_000,
            user_ticks: 150,
            sys_ticks: 250,
            write_calls: 107,
        };
        let usage = after.since(&before);
        assert_eq!(usage.wall_s, 2.0);
        assert_eq!((usage.user_s, usage.sys_s), (0.5, 2.0));
        assert_eq!(usage.cpu_s(), 2.5);
        assert_eq!(usage.write_calls, 100);
        assert_eq!((usage.rss_before, usage.rss_after), (10_000, 30_000));
    }

    #[test]
    fn samples_this_process() {
        let me = sample(&[std::process::id()]).unwrap();
        assert!(me.rss > 0);
        assert!(threads(std::process::id()).unwrap() >= 1);
    }
}
