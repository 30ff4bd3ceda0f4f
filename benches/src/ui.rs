//! What a person sees while a run goes on: a progress bar for connections
//! and a live status line (indicatif), on stderr. Without a terminal the
//! bars are hidden and phases are printed as plain lines instead.

use std::{sync::Arc, time::Duration};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use crate::{fleet::Monitor, process};

/// The progress display of one run.
pub struct Ui {
    multi: MultiProgress,
    bar: ProgressBar,
    status: ProgressBar,
    /// Refreshes the status line; stopped on drop.
    ticker: Option<JoinHandle<()>>,
}

impl Ui {
    /// A bar for `total` connections, titled `title`.
    pub fn new(title: &str, total: u64) -> Ui {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let bar = multi.add(ProgressBar::new(total));
        // Unwrap: the templates are constants known to parse.
        bar.set_style(
            ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} connections {msg}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(title.to_string());
        let status = multi.add(ProgressBar::new_spinner());
        status.set_style(ProgressStyle::with_template("{prefix:>24} {spinner} {msg}").unwrap());
        status.set_prefix("status");
        Ui {
            multi,
            bar,
            status,
            ticker: None,
        }
    }

    /// Says what the run is doing now.
    pub fn phase(&self, text: &str) {
        if self.multi.is_hidden() {
            eprintln!("herald-bench: {} {text}", self.bar.prefix());
        } else {
            self.bar.set_message(format!("· {text}"));
        }
    }

    pub fn set_connected(&self, n: u64) {
        self.bar.set_position(n);
    }

    /// Refreshes the status line every 250 ms from the fleet's counters and
    /// the server's `/proc` figures.
    pub fn watch(&mut self, monitor: Monitor, pids: Vec<u32>) {
        let status = self.status.clone();
        let bar = self.bar.clone();
        let pids = Arc::new(pids);
        self.ticker = Some(tokio::spawn(async move {
            let mut last = process::sample(&pids).ok();
            let mut last_received = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let progress = monitor.progress();
                bar.set_position(progress.connected);
                let Ok(now) = process::sample(&pids) else {
                    continue;
                };
                let Some(before) = last.replace(now) else {
                    continue;
                };
                let usage = now.since(&before);
                let wall = usage.wall_s.max(1e-3);
                let rate = progress.received_total.saturating_sub(last_received) as f64 / wall;
                last_received = progress.received_total;
                status.set_message(format!(
                    "received {} ({:.0}/s) · closed {} · failed {} · server CPU {:.0}% (sys {:.0}%) · RSS {:.1} MB",
                    progress.received_total,
                    rate,
                    progress.closed,
                    progress.failed,
                    usage.cpu_s() / wall * 100.0,
                    usage.sys_s / wall * 100.0,
                    now.rss as f64 / 1e6,
                ));
                status.tick();
            }
        }));
    }

    /// Clears the display.
    pub fn finish(mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        self.status.finish_and_clear();
        self.bar.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
    }
}
