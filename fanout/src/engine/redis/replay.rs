//! Signed requests every node has seen: a signature, once accepted by any
//! node, is a key in Redis until its replay window has passed, so that a
//! recorded request cannot be sent again to another node, or after a restart.

use std::time::Duration;

use fred::{
    interfaces::{ClientLike, KeysInterface},
    types::{Expiration, SetOptions},
};

use super::RedisEngine;
use crate::Error;

impl RedisEngine {
    /// `SET key 1 NX EX ttl`: `true` when this call created the key. Run
    /// once, never retried: a retry after a lost answer would find the
    /// key it made itself and refuse a request that was never replayed.
    pub(super) async fn claim_once(&self, key: String, ttl: Duration) -> Result<bool, Error> {
        if !self.health.reachable() {
            return Err(Error::Unavailable("Redis is unreachable".into()));
        }
        let ttl = ttl.as_secs().max(1) as i64;
        let created: Option<String> = self
            .client
            .with_options(&self.options)
            .set(
                key,
                1,
                Some(Expiration::EX(ttl)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(created.is_some())
    }
}
