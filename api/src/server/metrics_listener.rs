//! The listener of `metrics.listen`: `/metrics`, `/healthz` and `/readyz`
//! on an address of their own (an internal interface, a port the firewall
//! keeps to the monitoring network), so that the public listener need not
//! serve metrics at all.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{App, http};

/// Serves the operations routes on `listener` for as long as the process runs:
/// scrapes keep working while the main listener drains at shutdown.
pub(crate) async fn serve(listener: TcpListener, app: App, header_timeout: Duration) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(http::handle_ops(&app, request)) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                log_ended(peer, &error);
            }
        });
    }
}

fn log_ended(peer: SocketAddr, error: &hyper::Error) {
    tracing::debug!(client.addr = %peer, %error, "metrics connection ended with an error");
}
