//! Pinning the server and the load generator to CPUs of their own: by
//! default, or as `--server-cpus` and `--client-cpus` say; CPU lists as
//! taskset writes them, and `sched_setaffinity`.
//!
//! On a machine with few cores, a multi-threaded server's latency tail is
//! mostly the load generator waiting for a core (and the other way round);
//! pinned apart, each side has its own. A thread passes its affinity on to
//! every thread and process it creates, which is what both halves rely on:
//! - the bench pins its main thread before the runtime starts, so every
//!   runtime thread, and every worker process they spawn, has the client set;
//! - a server is spawned from a thread that holds the server set for just the
//!   moment of the spawn ([`spawn_on`]), so the server's first thread, and
//!   every thread and process it starts later, has the server set, not the
//!   client set it would otherwise inherit from the bench.
//!
//! By default, on a machine that gives the bench at least 2 CPUs, the servers
//! get the first half of them and the bench the rest ([`Pinning::resolve`]);
//! with one of the options, the other side gets the CPUs that one leaves.
//! `--no-pin` pins nothing, as does the default when the bench has one CPU
//! or measures a server it did not start (`--addr`).

use std::{collections::BTreeSet, fmt, io, str::FromStr};

use anyhow::{Context, bail};
use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};

/// The pinning options every scenario, `compare` and `report` take.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Pinning {
    /// Pin every server process the bench starts (each herald node,
    /// redis-server, the nginx master and its workers) to these CPUs: a list
    /// such as 0, 0-3 or 0,2-3.
    #[arg(long, value_name = "LIST")]
    pub server_cpus: Option<CpuList>,
    /// Pin the bench itself and every worker process it spawns to these CPUs.
    #[arg(long, value_name = "LIST")]
    pub client_cpus: Option<CpuList>,
    /// Pin nothing: servers and bench run on whichever CPUs the kernel gives
    /// them (by default, the servers get the first half of the CPUs and the
    /// bench the rest).
    #[arg(long, conflicts_with_all = ["server_cpus", "client_cpus"])]
    pub no_pin: bool,
}

/// A set of CPU numbers, written like taskset's lists: `0`, `0-3`, `0,2-3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(BTreeSet<usize>);

/// The thread this is called on: `sched_setaffinity` and `sched_getaffinity`
/// take a thread id, and 0 is the calling thread.
const THIS_THREAD: Pid = Pid::from_raw(0);

impl Pinning {
    /// Checks that every CPU named exists here, fills in the default split
    /// ([`Pinning::resolve`]; `external`: the server is not the bench's own),
    /// then pins this thread to the client set. Called on the main thread
    /// before the runtime starts, so that the runtime's threads, and the
    /// workers they spawn, inherit it; and before anything asks for
    /// [`Pinning::server_set`], which then names the resolved set.
    pub fn pin_bench(&mut self, external: bool) -> anyhow::Result<()> {
        let available = sched_getaffinity(THIS_THREAD).context("sched_getaffinity")?;
        for (flag, list) in [
            ("--server-cpus", &self.server_cpus),
            ("--client-cpus", &self.client_cpus),
        ] {
            let Some(list) = list else { continue };
            // The parser refused numbers past CpuSet::count(), so is_set cannot fail.
            if let Some(cpu) = list
                .0
                .iter()
                .find(|&&cpu| !available.is_set(cpu).unwrap_or(false))
            {
                bail!(
                    "{flag} {list}: CPU {cpu} does not exist or is not available to this \
                     process, which may run on {}",
                    CpuList::from_set(&available).name()
                );
            }
        }
        self.resolve(&CpuList::from_set(&available), external);
        if let Some(client) = &self.client_cpus {
            sched_setaffinity(THIS_THREAD, &client.set())
                .with_context(|| format!("cannot pin the bench to {}", client.name()))?;
        }
        Ok(())
    }

    /// Fills in what was not given, from the CPUs this process may use:
    /// - `--no-pin`, or both lists given: nothing to fill in;
    /// - one list given: the other side gets the CPUs it leaves, if any;
    /// - neither: with 2 CPUs or more (and a server the bench starts), the
    ///   servers get the first half, rounded down, and the bench the rest:
    ///   `0` and `1` on 2 CPUs, `0-1` and `2-3` on 4, `0` and `1-2` on 3.
    ///   Otherwise nothing is pinned.
    ///
    /// Resolved, the options name what happens, so that [`Pinning::args`]
    /// passes exactly that on to the runs `report` makes.
    pub fn resolve(&mut self, available: &CpuList, external: bool) {
        let rest = |taken: &CpuList| {
            let rest: BTreeSet<usize> = available.0.difference(&taken.0).copied().collect();
            (!rest.is_empty()).then_some(CpuList(rest))
        };
        match (&self.server_cpus, &self.client_cpus) {
            _ if self.no_pin => {}
            (Some(_), Some(_)) => {}
            (Some(server), None) => self.client_cpus = rest(server),
            (None, Some(client)) => self.server_cpus = rest(client),
            (None, None) => {
                if external || available.0.len() < 2 {
                    return;
                }
                let half = available.0.len() / 2;
                let server = CpuList(available.0.iter().copied().take(half).collect());
                self.client_cpus = rest(&server);
                self.server_cpus = Some(server);
            }
        }
    }

    /// Where the servers run: the server set; with only a client set, every
    /// CPU, so that the servers do not inherit the client set; with neither,
    /// `None`: the servers start as they always did.
    pub fn server_set(&self) -> Option<CpuSet> {
        match (&self.server_cpus, &self.client_cpus) {
            (Some(server), _) => Some(server.set()),
            (None, Some(_)) => Some(every_cpu()),
            (None, None) => None,
        }
    }

    /// The options as command-line words, for the runs `report` makes.
    pub fn args(&self) -> Vec<String> {
        if self.no_pin {
            return vec!["--no-pin".into()];
        }
        let mut words = Vec::new();
        if let Some(list) = &self.server_cpus {
            words.extend(["--server-cpus".into(), list.to_string()]);
        }
        if let Some(list) = &self.client_cpus {
            words.extend(["--client-cpus".into(), list.to_string()]);
        }
        words
    }

    /// The pinning in a sentence, for the report's method text.
    pub fn describe(&self) -> String {
        let flags = format!("`{}`", self.args().join(" "));
        match (&self.server_cpus, &self.client_cpus) {
            (Some(server), Some(client)) => format!(
                "The server's processes (each Herald node, and Redis where a run has one; \
                 nginx's master and worker) ran on {} and the bench with its worker processes on {} ({flags}, set with \
                 `sched_setaffinity` before each process started), so that neither side waited \
                 for a core the other was using.",
                server.name(),
                client.name()
            ),
            (Some(server), None) => format!(
                "The server's processes ran on {} ({flags}); the bench and its worker processes \
                 were not pinned.",
                server.name()
            ),
            (None, Some(client)) => format!(
                "The bench and its worker processes ran on {} ({flags}); the server's processes \
                 were not pinned.",
                client.name()
            ),
            (None, None) => "Nothing was pinned: the server's processes and the load generator \
                 ran on whichever CPUs the kernel gave them (`--no-pin`, or a bench with one \
                 CPU). By default, on 2 CPUs or more, the bench pins the servers to the first \
                 half of its CPUs and itself to the rest."
                .into(),
        }
    }

    /// The pinning in a few words, for a run's text report: "pinned: server
    /// CPU 0, bench CPU 1", or "unpinned".
    pub fn summary(&self) -> String {
        let name = |list: &Option<CpuList>| list.as_ref().map_or("unpinned".into(), CpuList::name);
        match (&self.server_cpus, &self.client_cpus) {
            (None, None) if self.no_pin => "unpinned (--no-pin)".into(),
            (None, None) => "unpinned".into(),
            (server, client) => format!("pinned: server {}, bench {}", name(server), name(client)),
        }
    }

    /// The pinning as a clause after a machine's description, or nothing.
    pub fn clause(&self) -> String {
        match (&self.server_cpus, &self.client_cpus) {
            (None, None) => String::new(),
            (server, client) => {
                let name =
                    |list: &Option<CpuList>| list.as_ref().map_or("any CPU".into(), CpuList::name);
                format!(
                    ", the server on {} and the bench on {}",
                    name(server),
                    name(client)
                )
            }
        }
    }
}

/// The machine's CPUs, whatever this process is pinned to: the report
/// describes the machine, and a bench pinned with `--client-cpus` sees
/// only its own share in `available_parallelism`.
pub fn machine_cpus() -> usize {
    let listed = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    if listed > 0 {
        listed
    } else {
        std::thread::available_parallelism().map_or(0, usize::from)
    }
}

/// Runs `spawn` with this thread pinned to `cpus` (when given), then puts the
/// thread's own set back. A child process starts with the affinity of the
/// thread that created it, so it runs on `cpus` from its first instruction,
/// and so do the threads it starts; pinning it after the spawn would race
/// with those. `spawn` must not wait: nothing else may run on this thread
/// while it holds the server set.
pub fn spawn_on<T>(cpus: Option<&CpuSet>, spawn: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let Some(cpus) = cpus else {
        return spawn();
    };
    let own = sched_getaffinity(THIS_THREAD)?;
    sched_setaffinity(THIS_THREAD, cpus)?;
    let spawned = spawn();
    sched_setaffinity(THIS_THREAD, &own)?;
    spawned
}

/// Runs `spawn` with this thread allowed every CPU: for a child that must
/// not inherit the bench's own pinning (the unpinned run of `report`).
pub fn spawn_unpinned<T>(spawn: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    spawn_on(Some(&every_cpu()), spawn)
}

/// Pins the (single-threaded) process `pid` to `cpus`.
pub fn pin_process(pid: u32, cpus: &CpuSet) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(sched_setaffinity(Pid::from_raw(pid), cpus)?)
}

/// Every CPU a mask can hold; the kernel narrows it to the CPUs that exist
/// and that the process' cgroup allows, which is what an unpinned process has.
fn every_cpu() -> CpuSet {
    let mut set = CpuSet::new();
    for cpu in 0..CpuSet::count() {
        // In range by the loop's bounds.
        let _ = set.set(cpu);
    }
    set
}

// === impl CpuList ===

impl CpuList {
    fn set(&self) -> CpuSet {
        let mut set = CpuSet::new();
        for &cpu in &self.0 {
            // The parser refused numbers past CpuSet::count(), so this cannot fail.
            let _ = set.set(cpu);
        }
        set
    }

    fn from_set(set: &CpuSet) -> CpuList {
        CpuList(
            (0..CpuSet::count())
                .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                .collect(),
        )
    }

    /// "CPU 0" or "CPUs 0,2-3".
    fn name(&self) -> String {
        if self.0.len() == 1 {
            format!("CPU {self}")
        } else {
            format!("CPUs {self}")
        }
    }
}

impl FromStr for CpuList {
    type Err = String;

    fn from_str(text: &str) -> Result<CpuList, String> {
        if text.is_empty() {
            return Err("no CPUs given; write a list such as 0, 0-3 or 0,2-3".into());
        }
        let mut cpus = BTreeSet::new();
        for part in text.split(',') {
            let (first, last) = match part.split_once('-') {
                Some((first, last)) => (cpu(first)?, cpu(last)?),
                None => (cpu(part)?, cpu(part)?),
            };
            if first > last {
                return Err(format!("{part:?} runs backwards; write {last}-{first}"));
            }
            cpus.extend(first..=last);
        }
        Ok(CpuList(cpus))
    }
}

/// One CPU number of a list.
fn cpu(text: &str) -> Result<usize, String> {
    let not_a_number =
        || format!("{text:?} is not a CPU number; write a list such as 0, 0-3 or 0,2-3");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_number());
    }
    let cpu: usize = text.parse().map_err(|_| not_a_number())?;
    if cpu >= CpuSet::count() {
        return Err(format!(
            "CPU {cpu} is past the last one an affinity mask holds ({})",
            CpuSet::count() - 1
        ));
    }
    Ok(cpu)
}

/// The shortest list, with every run of CPUs as a range, as the kernel
/// writes `Cpus_allowed_list` in `/proc/PID/status`.
impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &cpu in &self.0 {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == cpu => *last = cpu,
                _ => runs.push((cpu, cpu)),
            }
        }
        let parts: Vec<String> = runs
            .iter()
            .map(|&(first, last)| {
                if first == last {
                    first.to_string()
                } else {
                    format!("{first}-{last}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list, and the CPUs it names (`Ok`) or a piece of its error (`Err`).
    #[test]
    fn lists_parse_like_tasksets() {
        let cases: &[(&str, Result<&[usize], &str>)] = &[
            ("0", Ok(&[0])),
            ("1", Ok(&[1])),
            ("0-3", Ok(&[0, 1, 2, 3])),
            ("0,2-3", Ok(&[0, 2, 3])),
            ("3,1", Ok(&[1, 3])),
            ("1,0-1", Ok(&[0, 1])),
            ("2-2", Ok(&[2])),
            ("1023", Ok(&[1023])),
            ("", Err("no CPUs given")),
            ("a", Err("\"a\" is not a CPU number")),
            ("1,", Err("\"\" is not a CPU number")),
            (",1", Err("\"\" is not a CPU number")),
            ("-1", Err("\"\" is not a CPU number")),
            ("0-", Err("\"\" is not a CPU number")),
            ("1-2-3", Err("\"2-3\" is not a CPU number")),
            (" 1", Err("\" 1\" is not a CPU number")),
            ("+1", Err("\"+1\" is not a CPU number")),
            ("3-1", Err("\"3-1\" runs backwards; write 1-3")),
            (
                "1024",
                Err("CPU 1024 is past the last one an affinity mask holds (1023)"),
            ),
            ("99999999999999999999999", Err("is not a CPU number")),
        ];
        for (text, expected) in cases {
            let parsed = text.parse::<CpuList>();
            match (expected, &parsed) {
                (Ok(cpus), Ok(list)) => {
                    assert_eq!(
                        list.0.iter().copied().collect::<Vec<_>>(),
                        *cpus,
                        "{text:?}"
                    );
                }
                (Err(piece), Err(error)) => assert!(error.contains(piece), "{text:?}: {error}"),
                _ => panic!("{text:?}: expected {expected:?}, got {parsed:?}"),
            }
        }
    }

    #[test]
    fn lists_print_as_the_kernel_writes_them() {
        for (text, printed) in [
            ("0", "0"),
            ("1,0", "0-1"),
            ("0-3", "0-3"),
            ("3,2,0", "0,2-3"),
            ("0-2,4,6-9", "0-2,4,6-9"),
        ] {
            let list: CpuList = text.parse().unwrap();
            assert_eq!(list.to_string(), printed, "{text}");
            assert_eq!(
                printed.parse::<CpuList>(),
                Ok(list),
                "{printed} parses back"
            );
        }
    }

    #[test]
    fn servers_never_inherit_the_client_set() {
        let pinning = |server: Option<&str>, client: Option<&str>| Pinning {
            server_cpus: server.map(|s| s.parse().unwrap()),
            client_cpus: client.map(|s| s.parse().unwrap()),
            no_pin: false,
        };
        assert_eq!(pinning(None, None).server_set(), None);
        assert_eq!(
            pinning(Some("0"), Some("1")).server_set(),
            Some(CpuList::from_str("0").unwrap().set())
        );
        assert_eq!(pinning(None, Some("1")).server_set(), Some(every_cpu()));
        assert_eq!(
            pinning(Some("0"), Some("1")).args(),
            ["--server-cpus", "0", "--client-cpus", "1"]
        );
    }

    /// What the bench may use, what was asked (`server`, `client`, `--no-pin`,
    /// a server of its own), and the lists it then runs with.
    #[test]
    fn the_default_splits_the_cpus_in_two() {
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            bool,
            bool,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            // available, server, client, no_pin, external => server, client
            ("0-1", None, None, false, false, Some("0"), Some("1")),
            ("0-3", None, None, false, false, Some("0-1"), Some("2-3")),
            ("0-2", None, None, false, false, Some("0"), Some("1-2")),
            (
                "2,5,7,9",
                None,
                None,
                false,
                false,
                Some("2,5"),
                Some("7,9"),
            ),
            // One CPU: nothing to split.
            ("0", None, None, false, false, None, None),
            ("3", None, None, false, false, None, None),
            // --no-pin, and a server the bench did not start.
            ("0-3", None, None, true, false, None, None),
            ("0-3", None, None, false, true, None, None),
            // One side given: the other gets what it leaves, if anything.
            ("0-3", Some("0"), None, false, false, Some("0"), Some("1-3")),
            ("0-3", None, Some("3"), false, false, Some("0-2"), Some("3")),
            ("0-1", Some("0-1"), None, false, false, Some("0-1"), None),
            (
                "0-3",
                None,
                Some("1"),
                false,
                true,
                Some("0,2-3"),
                Some("1"),
            ),
            // Both given: as given.
            (
                "0-3",
                Some("1"),
                Some("1"),
                false,
                false,
                Some("1"),
                Some("1"),
            ),
        ];
        for &(available, server, client, no_pin, external, want_server, want_client) in cases {
            let mut pinning = Pinning {
                server_cpus: server.map(|s| s.parse().unwrap()),
                client_cpus: client.map(|s| s.parse().unwrap()),
                no_pin,
            };
            pinning.resolve(&available.parse().unwrap(), external);
            let got = (
                pinning.server_cpus.as_ref().map(CpuList::to_string),
                pinning.client_cpus.as_ref().map(CpuList::to_string),
            );
            let want = (want_server.map(String::from), want_client.map(String::from));
            assert_eq!(
                got, want,
                "{available} {server:?} {client:?} no_pin={no_pin} external={external}"
            );
        }
    }

    #[test]
    fn the_summary_says_which() {
        let mut pinning = Pinning::default();
        pinning.resolve(&"0-1".parse().unwrap(), false);
        assert_eq!(pinning.summary(), "pinned: server CPU 0, bench CPU 1");
        assert_eq!(pinning.args(), ["--server-cpus", "0", "--client-cpus", "1"]);
        let mut pinning = Pinning::default();
        pinning.resolve(&"0-3".parse().unwrap(), false);
        assert_eq!(pinning.summary(), "pinned: server CPUs 0-1, bench CPUs 2-3");
        let mut pinning = Pinning {
            no_pin: true,
            ..Pinning::default()
        };
        pinning.resolve(&"0-3".parse().unwrap(), false);
        assert_eq!(pinning.summary(), "unpinned (--no-pin)");
        assert_eq!(pinning.args(), ["--no-pin"]);
        assert_eq!(pinning.server_set(), None);
        assert_eq!(Pinning::default().summary(), "unpinned");
        let server_only = Pinning {
            server_cpus: Some("0".parse().unwrap()),
            ..Pinning::default()
        };
        assert_eq!(
            server_only.summary(),
            "pinned: server CPU 0, bench unpinned"
        );
    }
}
