//! Users an operator asked to disconnect (the console's action,
//! `POST /api/admin/disconnect`). The request flags every connection of the
//! node once; each flagged connection looks here for its own site and
//! user, and closes with `disconnected` (4011) if it finds them. A request
//! is kept only for a few seconds, long enough for every flagged
//! connection to look, so that the user's later connections are not
//! refused: this disconnects, it does not ban.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a request stays to be found: every connection flagged by it
/// runs well within this, even on a busy node.
const KEPT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct Disconnects {
    requests: Mutex<Vec<Request>>,
}

struct Request {
    site: Box<str>,
    user: Box<str>,
    until: Instant,
}

impl Disconnects {
    pub(crate) fn add(&self, site: &str, user: &str) {
        let now = Instant::now();
        let mut requests = self.requests.lock();
        requests.retain(|request| request.until > now);
        requests.push(Request {
            site: site.into(),
            user: user.into(),
            until: now + KEPT,
        });
    }

    /// Whether `user` of `site` is to be disconnected.
    pub(crate) fn includes(&self, site: &str, user: &str) -> bool {
        let now = Instant::now();
        self.requests
            .lock()
            .iter()
            .any(|request| request.until > now && &*request.site == site && &*request.user == user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_site_and_user_asked_for_only() {
        let disconnects = Disconnects::default();
        disconnects.add("a", "alice");
        assert!(disconnects.includes("a", "alice"));
        assert!(!disconnects.includes("b", "alice"));
        assert!(!disconnects.includes("a", "bob"));
    }
}
