//! Herald's HTTP front: the listener that routes each new connection (SSE
//! streams to `push`, everything else to hyper), the publish and history
//! API, health and metrics, the WebSocket upgrade, configuration and
//! graceful shutdown. The `herald` binary in `main.rs` wires it together.

mod accounting;
mod app;
mod compat;
pub mod config;
mod demo;
/// The configuration and delivery parsers, for the fuzz targets in `fuzz/`
/// only. Not an API: nothing else may depend on it.
#[doc(hidden)]
pub mod fuzz;
mod http;
pub mod logging;
mod metrics;
mod server;
mod webhooks;

pub use app::App;
pub use server::Server;
