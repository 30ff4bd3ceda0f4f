//! What each controller command does, against the site the port publishes
//! for, and the exact reply Meteor gave (`../shared/reference/protocols.md`
//! §3.2). Replies are whole lines, CRLF included.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use fanout::{ChannelKey, ChannelName};

use super::{
    command::{Command, INVALID},
    unslash::strip_slashes,
};
use crate::{
    App,
    compat::publish::{Port, count_refused, max_message_bytes, publish},
    config::CompatPortConfig,
};

/// What to send back, and whether the connection ends after it.
pub(crate) struct Reply {
    pub text: String,
    pub close: bool,
}

impl Reply {
    fn line(text: impl Into<String>) -> Self {
        let mut text = text.into();
        text.push_str("\r\n");
        Self { text, close: false }
    }
}

/// The port's own counters, for `SHOWSTATS`.
struct Stats {
    started: Instant,
    /// Command lines answered, refused ones included.
    requests: AtomicU64,
    /// Messages published through the port.
    messages: AtomicU64,
}

/// The controller: one per port, shared by its connections.
pub(crate) struct Controller {
    app: App,
    config: CompatPortConfig,
    stats: Stats,
}

impl Controller {
    pub(crate) fn new(app: App, config: CompatPortConfig) -> Self {
        Self {
            app,
            config,
            stats: Stats {
                started: Instant::now(),
                requests: AtomicU64::new(0),
                messages: AtomicU64::new(0),
            },
        }
    }

    pub(crate) fn app(&self) -> &App {
        &self.app
    }

    /// The longest line worth reading whole: an `ADDMESSAGE` of the
    /// largest message the site accepts, every byte of it escaped, to the
    /// longest channel name with the channel base.
    pub(crate) fn max_line(&self) -> usize {
        let max_message = max_message_bytes(&self.app, &self.config.site);
        "ADDMESSAGE ".len()
            + self.config.names.channelbase.len()
            + 1
            + fanout::MAX_CHANNEL_LEN
            + 1
            + 2 * max_message
    }

    /// The reply to a line longer than [`Controller::max_line`].
    pub(crate) fn too_long(&self) -> Reply {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Reply::line(format!(
            "ERR Line too long: at most {} bytes; nothing was published",
            self.max_line()
        ))
    }

    pub(crate) async fn answer(&self, line: &[u8]) -> Reply {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let Some(command) = super::command::parse(line) else {
            return Reply::line(INVALID);
        };
        match command {
            Command::AddMessage { channel, text } => self.add_message(channel, text).await,
            Command::CountSubscribers { channel } => {
                let count = self
                    .channel(channel)
                    .map_or(0, |key| self.app.fanout().local_subscribers(&key));
                Reply::line(format!("OK {count}"))
            }
            Command::ListChannels => self.list_channels().await,
            Command::ShowStats => self.show_stats(),
            Command::Quit => Reply {
                text: "OK\r\n".into(),
                close: true,
            },
        }
    }

    /// Herald's channel for a Meteor channel name (`push::statusnet`).
    fn channel_name(&self, meteor_name: &str) -> Result<ChannelName, fanout::Error> {
        self.config.names.meteor(meteor_name)
    }

    fn channel(&self, meteor_name: &str) -> Option<ChannelKey> {
        let name = self.channel_name(meteor_name).ok()?;
        Some(ChannelKey::new(&self.config.site, &name))
    }

    /// The Meteor name of one of the site's channels.
    fn meteor_name(&self, channel: &ChannelKey) -> String {
        match self.config.names.channelbase.as_str() {
            "" => channel.name().to_string(),
            base => format!("{base}-{}", channel.name()),
        }
    }

    async fn add_message(&self, channel: &str, text: &[u8]) -> Reply {
        let name = match self.channel_name(channel) {
            Ok(name) => name,
            Err(error) => {
                count_refused(&self.app, Port::Meteor);
                return Reply::line(format!("ERR Invalid channel name: {error}"));
            }
        };
        let text = strip_slashes(text);
        match publish(&self.app, Port::Meteor, &self.config.site, &name, text).await {
            Ok(offset) => {
                self.stats.messages.fetch_add(1, Ordering::Relaxed);
                Reply::line(format!("OK\t{offset}"))
            }
            Err(refused) => Reply::line(format!("ERR {refused}")),
        }
    }

    async fn list_channels(&self) -> Reply {
        let fanout = self.app.fanout();
        let mut channels: Vec<(String, usize, usize)> = Vec::new();
        for channel in fanout.local_channels(&self.config.site) {
            let messages = match fanout.history(&channel, None).await {
                Ok(history) => history.messages.len(),
                Err(_) => 0,
            };
            let subscribers = fanout.local_subscribers(&channel);
            channels.push((self.meteor_name(&channel), messages, subscribers));
        }
        channels.sort();
        let mut text = String::from("OK\r\n");
        for (name, messages, subscribers) in channels {
            let _ = write!(text, "{name}({messages}/{subscribers})\r\n");
        }
        text.push_str("--EOT--\r\n");
        Reply { text, close: false }
    }

    fn show_stats(&self) -> Reply {
        let fanout = self.app.fanout();
        let channels = fanout.local_channels(&self.config.site);
        let subscribers: usize = channels
            .iter()
            .map(|channel| fanout.local_subscribers(channel))
            .sum();
        let mut text = String::from("OK\r\n");
        let _ = write!(
            text,
            "uptime: {}\r\nchannel_count: {}\r\ntotal_requests: {}\r\ncurrent_subscribers: {}\r\nunique_messages: {}\r\n--EOT--\r\n",
            self.stats.started.elapsed().as_secs(),
            channels.len(),
            self.stats.requests.load(Ordering::Relaxed),
            subscribers,
            self.stats.messages.load(Ordering::Relaxed),
        );
        Reply { text, close: false }
    }
}
