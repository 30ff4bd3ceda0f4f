//! A figure read at a steady interval while a phase runs, in a task of its
//! own, until the phase asks for the readings ([`Sampler::finish`]).

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::{sync::watch, task::JoinHandle};

/// A sampler running until [`Sampler::finish`].
pub struct Sampler<T> {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<T>>,
}

impl<T: Send + 'static> Sampler<T> {
    /// Reads `sample(&mut state)` at once and then every `every`; a reading
    /// of `None` (the figure could not be read this time) is skipped.
    pub fn start<S, F>(every: Duration, mut state: S, mut sample: F) -> Self
    where
        S: Send + 'static,
        F: for<'a> FnMut(&'a mut S) -> BoxFuture<'a, Option<T>> + Send + 'static,
    {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                samples.extend(sample(&mut state).await);
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stopped.wait_for(|&stop| stop) => return samples,
                }
            }
        });
        Self { stop, task }
    }

    /// Stops sampling; the readings taken.
    pub async fn finish(self) -> Vec<T> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}
