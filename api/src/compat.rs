//! The publisher ports of the servers Herald replaces (docs/compat.md):
//! Meteor's controller port and Orbited's STOMP broker, each speaking its
//! own wire protocol, and both publishing through [`publish`] exactly as
//! `POST /api/publish` does. What they share lives here: binding a port
//! and the accept loop with its connection cap. Their channel names follow
//! `push::statusnet`, as Meteor's `/push` subscribers do.

pub(crate) mod meteor;
pub(crate) mod publish;
pub(crate) mod stomp;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

/// Binds a compatibility port (`key` names its setting, for the error) and
/// logs it with `what` it is.
pub(crate) async fn bind(
    config: &crate::config::CompatPortConfig,
    key: &str,
    what: &str,
) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} ({key})", config.listen))?;
    let addr = listener.local_addr().ok();
    tracing::info!(
        listen = ?addr,
        site = config.site,
        channelbase = config.names.channelbase,
        "{what}"
    );
    Ok(listener)
}

/// Connections a compatibility port serves at once. A site's publishers
/// hold one connection per PHP worker at most, so this is far above what a
/// busy site needs; past it, a new connection is told so and closed.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// Accepts connections on `listener` for as long as the process runs, each
/// served by `serve` on a task of its own, at most [`MAX_CONNECTIONS`] at
/// once; past it, a new connection is sent `refusal` and closed. `port`
/// names the port in the logs.
pub(crate) async fn accept_each<F, Fut>(
    listener: TcpListener,
    port: &'static str,
    refusal: Vec<u8>,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let refusal: Arc<[u8]> = refusal.into();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, port, "compatibility port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let refusal = refusal.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(&refusal).await;
            });
            continue;
        };
        let served = serve(stream);
        tokio::spawn(async move {
            if let Err(error) = served.await {
                tracing::debug!(client.addr = %peer, %error, port, "connection ended with an error");
            }
            drop(slot);
        });
    }
}
