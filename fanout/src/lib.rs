//! Herald's fan-out core: channel names, messages with positions, the local
//! subscriber registry (the hub), per-channel history, and the engines that
//! assign offsets and carry messages between nodes.
//!
//! This crate knows nothing about sockets or HTTP. Wire formats live in `push`;
//! they reach in here only through [`Message::encoded`], which caches one
//! encoding per format so that every subscriber shares the same bytes.

mod channel;
mod engine;
mod error;
pub mod events;
mod fanout;
mod history;
pub mod lag;
mod message;
mod metrics;
pub mod occupancy;
pub mod presence;
mod registry;
mod subscription;
pub mod timeline;

pub use channel::{
    ChannelKey, ChannelName, MAX_CHANNEL_LEN, MAX_SITE_LEN, TimelineKind, is_site_id,
};
pub use engine::{
    Engine, History, PublishRequest, Published,
    memory::MemoryEngine,
    redis::{RedisConfig, RedisEngine, RedisMetrics},
};
pub use error::Error;
pub use fanout::Fanout;
pub use history::HistoryConfig;
pub use message::{ENCODINGS, Epoch, InvalidEpoch, InvalidPosition, Message, Position, Tags};
pub use metrics::Metrics;
pub use registry::{ChannelWatcher, Flush, Flushes, Handoff, Hub, Registration, Subscriber, Watch};
pub use subscription::Subscription;
pub use timeline::{DEFAULT_EXPANDER_QUEUE_PER_SITE, DeliveryReport, Recipients, TimelineSettings};
