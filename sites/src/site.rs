//! One site at run time: its settings, which a reload swaps, and its
//! counters, which survive reloads. Nothing here runs on its own: an idle
//! site is this struct and its entries in the lookup maps.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::{Mutex, RwLock};

use crate::ConnectionLimit;
use crate::{
    bucket::TokenBucket,
    ip_limits::IpTable,
    replay::{ReplayCache, ReplayError},
    settings::SiteSettings,
};

pub struct Site {
    id: Box<str>,
    settings: RwLock<Arc<SiteSettings>>,
    /// Open connections.
    connections: AtomicU32,
    ips: Mutex<IpTable>,
    publish: Mutex<TokenBucket>,
    /// Channels opened on this node that nobody here subscribed to yet.
    new_channels: Mutex<TokenBucket>,
    replays: Mutex<ReplayCache>,
    /// Set when a reload removed the site; its connections then close.
    removed: AtomicBool,
}

impl Site {
    pub(crate) fn new(settings: SiteSettings) -> Self {
        Self {
            id: settings.id.clone().into_boxed_str(),
            publish: Mutex::new(TokenBucket::full(settings.limits.publish_burst)),
            new_channels: Mutex::new(TokenBucket::full(settings.limits.new_channel_burst)),
            settings: RwLock::new(Arc::new(settings)),
            connections: AtomicU32::new(0),
            ips: Mutex::new(IpTable::default()),
            replays: Mutex::new(ReplayCache::default()),
            removed: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The settings now in force.
    pub fn settings(&self) -> Arc<SiteSettings> {
        self.settings.read().clone()
    }

    pub(crate) fn replace_settings(&self, settings: SiteSettings) {
        *self.settings.write() = Arc::new(settings);
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }

    /// Open connections of the site.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a new connection from `ip`, or says which limit it hit.
    /// Answers the address if it was counted against the per-IP limits, so
    /// that closing uncounts exactly what opening counted.
    pub fn open_connection(&self, ip: IpAddr) -> Result<Option<IpAddr>, ConnectionLimit> {
        let settings = self.settings();
        let limits = &settings.limits;
        let by_ip = limits.connections_per_ip > 0 || limits.connection_rate_per_ip > 0;
        if by_ip {
            self.ips.lock().open(ip, limits, Instant::now())?;
        }
        let cap = limits.connections;
        let taken = self
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (cap == 0 || open < cap).then_some(open + 1)
            });
        if taken.is_err() {
            if by_ip {
                self.ips.lock().close(ip, limits, Instant::now());
            }
            return Err(ConnectionLimit::Site);
        }
        Ok(by_ip.then_some(ip))
    }

    pub fn close_connection(&self, counted_ip: Option<IpAddr>) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = counted_ip {
            let settings = self.settings();
            self.ips.lock().close(ip, &settings.limits, Instant::now());
        }
    }

    /// Takes `messages` from the site's publish bucket, or says how long
    /// until they are there.
    pub fn take_publish(&self, messages: u32) -> Result<(), Duration> {
        let settings = self.settings();
        let limits = &settings.limits;
        if limits.publish_rate == 0 {
            return Ok(());
        }
        self.publish
            .lock()
            .take(
                messages,
                limits.publish_rate,
                limits.publish_burst.max(messages),
                Instant::now(),
            )
            .map_err(Duration::from_secs_f64)
    }

    /// Takes one channel from the site's new-channel bucket (a subscribe to
    /// a channel nobody on this node subscribes to), or says how long until
    /// there is one.
    pub fn take_new_channel(&self) -> Result<(), Duration> {
        let settings = self.settings();
        let limits = &settings.limits;
        if limits.new_channel_rate == 0 {
            return Ok(());
        }
        self.new_channels
            .lock()
            .take(
                1,
                limits.new_channel_rate,
                limits.new_channel_burst,
                Instant::now(),
            )
            .map_err(Duration::from_secs_f64)
    }

    /// Whether a signed request's signature was accepted before.
    pub fn signature_seen(&self, signature: &[u8; 32]) -> bool {
        self.replays.lock().contains(signature)
    }

    /// Remembers a signed request's signature; refuses one seen before.
    pub fn remember_signature(
        &self,
        signature: [u8; 32],
        timestamp: u64,
        now: u64,
        window: u64,
    ) -> Result<(), ReplayError> {
        self.replays
            .lock()
            .remember(signature, timestamp, now, window)
    }
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
