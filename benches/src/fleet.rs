//! The coordinator's side of the worker processes: the bench re-executes
//! itself as `herald-bench worker` once per share of the connections, sends
//! each its [`Spec`] and commands, and merges what they report.

use std::{process::Stdio, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use parking_lot::Mutex;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command as Process},
    sync::{mpsc, watch},
};

use crate::{
    stats::WorkerReport,
    worker::{Command, Event, Progress, Spec},
};

/// Most connections one worker holds: under the 20k open-files limit of a
/// process here, with room for the runtime's own descriptors.
pub const MAX_PER_WORKER: usize = 15_000;

/// Source addresses per worker (each gives about 28k ports per server port).
const SOURCES_PER_WORKER: u8 = 4;

/// The worker processes of one run.
pub struct Fleet {
    workers: Vec<Worker>,
    state: Arc<Mutex<Vec<WorkerState>>>,
    frontier: watch::Receiver<u64>,
    received_total: watch::Receiver<u64>,
}

struct Worker {
    /// How many of the run's connections this worker holds.
    share: usize,
    child: Child,
    stdin: ChildStdin,
    reports: mpsc::Receiver<WorkerReport>,
}

#[derive(Clone, Copy, Default)]
struct WorkerState {
    progress: Progress,
    connected: bool,
    exited: bool,
}

/// Reads the counters of a fleet.
#[derive(Clone)]
pub struct Monitor {
    state: Arc<Mutex<Vec<WorkerState>>>,
}

impl Monitor {
    /// Sums of the workers' counters, and the smallest frontier.
    pub fn progress(&self) -> Progress {
        let state = self.state.lock();
        let mut total = Progress {
            frontier: u64::MAX,
            ..Default::default()
        };
        for w in state.iter() {
            let p = w.progress;
            total.connected += p.connected;
            total.failed += p.failed;
            total.closed += p.closed;
            total.reconnected += p.reconnected;
            total.received += p.received;
            total.received_total += p.received_total;
            total.frontier = total.frontier.min(p.frontier);
        }
        if state.is_empty() {
            total.frontier = 0;
        }
        total
    }
}

/// Splits `total` connections over workers: `(first, count)` per worker.
pub fn plan(total: usize, workers: Option<usize>) -> Vec<(usize, usize)> {
    let workers = workers
        .unwrap_or_else(|| total.div_ceil(MAX_PER_WORKER))
        .clamp(1, 60);
    let base = total / workers;
    let extra = total % workers;
    let mut first = 0;
    (0..workers)
        .map(|w| {
            let count = base + usize::from(w < extra);
            let share = (first, count);
            first += count;
            share
        })
        .collect()
}

impl Fleet {
    /// Starts one worker per share of `template`'s connections.
    pub async fn spawn(template: &Spec, workers: Option<usize>) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe().context("cannot find this binary")?;
        let shares = plan(template.count, workers);
        let state = Arc::new(Mutex::new(vec![WorkerState::default(); shares.len()]));
        let (frontier_tx, frontier) = watch::channel(0u64);
        let (total_tx, received_total) = watch::channel(0u64);
        let counters = Arc::new((frontier_tx, total_tx));
        // Each worker has source addresses of its own, from the template's first.
        let last_source =
            usize::from(template.source_first) + shares.len() * usize::from(SOURCES_PER_WORKER);
        if last_source > 255 {
            bail!(
                "{} workers from source address 127.0.0.{} would pass 127.0.0.254",
                shares.len(),
                template.source_first
            );
        }
        let mut fleet = Vec::new();
        for (w, (first, count)) in shares.into_iter().enumerate() {
            let spec = Spec {
                worker: w,
                first,
                count,
                // No overflow: checked above.
                source_first: template.source_first + w as u8 * SOURCES_PER_WORKER,
                source_count: SOURCES_PER_WORKER,
                total: template.count,
                ..template.clone()
            };
            let mut child = Process::new(&exe)
                .arg("worker")
                .arg("--threads")
                .arg(spec.threads.max(1).to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            let mut stdin = child.stdin.take().context("no worker stdin")?;
            let stdout = child.stdout.take().context("no worker stdout")?;
            let line = serde_json::to_string(&spec)? + "\n";
            stdin.write_all(line.as_bytes()).await?;
            let (report_tx, reports) = mpsc::channel(4);
            tokio::spawn(read_events(
                w,
                stdout,
                state.clone(),
                counters.clone(),
                report_tx,
            ));
            fleet.push(Worker {
                share: count,
                child,
                stdin,
                reports,
            });
        }
        Ok(Fleet {
            workers: fleet,
            state,
            frontier,
            received_total,
        })
    }

    /// Sends `command` to every worker.
    pub async fn send(&mut self, command: &Command) -> anyhow::Result<()> {
        let line = serde_json::to_string(command)? + "\n";
        for worker in &mut self.workers {
            worker
                .stdin
                .write_all(line.as_bytes())
                .await
                .context("a worker process went away")?;
        }
        Ok(())
    }

    /// The fleet's counters: sums, and the smallest frontier.
    pub fn progress(&self) -> Progress {
        self.monitor().progress()
    }

    /// A handle that reads the fleet's counters from elsewhere.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            state: self.state.clone(),
        }
    }

    /// The worker processes' PIDs (those still known), for sampling the
    /// load generator's own CPU.
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// Messages every open connection has received; changes as they arrive.
    pub fn frontier(&self) -> watch::Receiver<u64> {
        self.frontier.clone()
    }

    /// Messages received by all connections together since they opened.
    pub fn received_total(&self) -> watch::Receiver<u64> {
        self.received_total.clone()
    }

    /// Opens every connection in `steps` equal steps; after each step has
    /// finished (every attempt opened or failed), calls `step` with the counts.
    pub async fn connect(
        &mut self,
        steps: usize,
        timeout: Duration,
        mut step: impl AsyncFnMut(&Progress),
    ) -> anyhow::Result<Progress> {
        let deadline = tokio::time::Instant::now() + timeout;
        let steps = steps.max(1);
        for s in 1..=steps {
            for w in self.state.lock().iter_mut() {
                w.connected = false;
            }
            for worker in &mut self.workers {
                let command = Command::Connect {
                    upto: worker.share * s / steps,
                };
                let line = serde_json::to_string(&command)? + "\n";
                worker
                    .stdin
                    .write_all(line.as_bytes())
                    .await
                    .context("a worker process went away")?;
            }
            loop {
                let (done, exited) = {
                    let state = self.state.lock();
                    (
                        state.iter().all(|w| w.connected || w.exited),
                        state.iter().any(|w| w.exited),
                    )
                };
                if exited {
                    bail!("a worker process exited while connecting");
                }
                if done {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("connections not all open after {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            step(&self.progress()).await;
        }
        Ok(self.progress())
    }

    /// Asks every worker for a report (`Report` or `Finish`) and merges them.
    pub async fn report(&mut self, command: Command) -> anyhow::Result<WorkerReport> {
        self.send(&command).await?;
        let mut reports = Vec::new();
        for worker in &mut self.workers {
            let report = tokio::time::timeout(Duration::from_secs(30), worker.reports.recv())
                .await
                .context("a worker did not report within 30 s")?
                .context("a worker exited without reporting")?;
            reports.push(report);
        }
        Ok(WorkerReport::merge(reports))
    }

    /// Final reports; then waits for the workers to exit (killing laggards).
    pub async fn finish(&mut self, published: Option<u64>) -> anyhow::Result<WorkerReport> {
        let report = self.report(Command::Finish { published }).await;
        for mut worker in std::mem::take(&mut self.workers) {
            drop(worker.stdin);
            if tokio::time::timeout(Duration::from_secs(5), worker.child.wait())
                .await
                .is_err()
            {
                let _ = worker.child.kill().await;
            }
        }
        report
    }
}

async fn read_events(
    w: usize,
    stdout: tokio::process::ChildStdout,
    state: Arc<Mutex<Vec<WorkerState>>>,
    counters: Arc<(watch::Sender<u64>, watch::Sender<u64>)>,
    reports: mpsc::Sender<WorkerReport>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Event>(&line) {
            Ok(Event::Progress(progress)) => {
                let (min, sum) = {
                    let mut state = state.lock();
                    state[w].progress = progress;
                    (
                        state.iter().map(|s| s.progress.frontier).min().unwrap_or(0),
                        state.iter().map(|s| s.progress.received_total).sum(),
                    )
                };
                for (counter, value) in [(&counters.0, min), (&counters.1, sum)] {
                    counter.send_if_modified(|v| {
                        let changed = *v != value;
                        *v = value;
                        changed
                    });
                }
            }
            Ok(Event::Connected) => state.lock()[w].connected = true,
            Ok(Event::Report { report }) => {
                let _ = reports.send(*report).await;
            }
            Err(error) => eprintln!("herald-bench: worker {w} said {line:?}: {error}"),
        }
    }
    state.lock()[w].exited = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_every_connection_once() {
        for (total, workers, expect) in [
            (100, None, vec![(0, 100)]),
            (18_000, None, vec![(0, 9_000), (9_000, 9_000)]),
            (10, Some(3), vec![(0, 4), (4, 3), (7, 3)]),
            (0, None, vec![(0, 0)]),
        ] {
            assert_eq!(plan(total, workers), expect, "{total} over {workers:?}");
        }
    }
}
