//! Log output: plain or JSON lines on stderr, filtered by `log.level`.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber. The filter was checked with the config.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if config.json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
