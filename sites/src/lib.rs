//! Sites: the tenants one process serves, each with its own key, secrets,
//! channels, limits and metrics (`docs/security.md`).
//!
//! Invariants:
//! - An idle site costs its [`Site`] struct and its entries in the lookup
//!   maps: no task, no timer, no upstream subscription.
//! - A reload swaps the whole table at once. A site that stays (same id)
//!   keeps its `Site`, so its counters and its open connections carry on;
//!   only its settings are replaced. A removed site is marked, and its
//!   connections see the mark on their next check.

mod bucket;
/// Token checking, for the fuzz target in `fuzz/` only.
/// Not an API: nothing else may depend on it.
#[doc(hidden)]
pub mod fuzz;
mod ip_limits;
mod limit;
pub mod mercure;
pub mod pusher;
mod replay;
mod settings;
pub mod signature;
mod site;
pub mod token;

use std::{collections::HashMap, sync::Arc};

use parking_lot::RwLock;

pub use limit::ConnectionLimit;
pub use replay::ReplayError;
pub use settings::{Mode, SiteLimits, SiteSettings};
pub use site::Site;

/// A cheap, cloneable handle on the current site table.
#[derive(Clone)]
pub struct Sites {
    table: Arc<RwLock<Arc<Table>>>,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<Box<str>, Arc<Site>>,
    by_key: HashMap<Box<str>, Arc<Site>>,
    /// SHA-256 of each secret → its site, to find a bearer secret's site.
    by_secret: HashMap<[u8; 32], Arc<Site>>,
}

/// What a reload changed, by site id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Sites {
    /// The table for `sites`, which the caller has checked: ids, keys and
    /// secrets unique across sites.
    pub fn new(sites: Vec<SiteSettings>) -> Self {
        let handle = Self {
            table: Arc::new(RwLock::new(Arc::new(Table::default()))),
        };
        handle.apply(sites);
        handle
    }

    /// Replaces the table with `sites` (checked like [`Sites::new`]'s).
    /// Sites whose id stays keep their state; removed ones are marked.
    pub fn apply(&self, sites: Vec<SiteSettings>) -> Reloaded {
        let old = self.table.read().clone();
        let mut reloaded = Reloaded::default();
        let mut table = Table::default();
        for settings in sites {
            let id = settings.id.clone();
            let site = match old.by_id.get(id.as_str()) {
                Some(site) => {
                    if *site.settings() != settings {
                        reloaded.changed.push(id.clone());
                        site.replace_settings(settings);
                    }
                    site.clone()
                }
                None => {
                    reloaded.added.push(id.clone());
                    Arc::new(Site::new(settings))
                }
            };
            let settings = site.settings();
            table
                .by_key
                .insert(settings.key.clone().into_boxed_str(), site.clone());
            for secret in &settings.secrets {
                table
                    .by_secret
                    .insert(signature::secret_digest(secret), site.clone());
            }
            table.by_id.insert(id.into_boxed_str(), site);
        }
        for (id, site) in &old.by_id {
            if !table.by_id.contains_key(id) {
                site.mark_removed();
                reloaded.removed.push(id.to_string());
            }
        }
        *self.table.write() = Arc::new(table);
        reloaded
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<Site>> {
        self.table.read().by_id.get(id).cloned()
    }

    pub fn by_key(&self, key: &str) -> Option<Arc<Site>> {
        self.table.read().by_key.get(key).cloned()
    }

    /// The site `secret` belongs to.
    pub fn by_secret(&self, secret: &str) -> Option<Arc<Site>> {
        let digest = signature::secret_digest(secret);
        self.table.read().by_secret.get(&digest).cloned()
    }

    /// The site a client that names none gets: the only one, if there is one.
    pub fn only(&self) -> Option<Arc<Site>> {
        let table = self.table.read();
        if table.by_id.len() == 1 {
            table.by_id.values().next().cloned()
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.table.read().by_id.len()
    }

    /// Every site served now, in no order.
    pub fn all(&self) -> Vec<Arc<Site>> {
        self.table.read().by_id.values().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(id: &str, secret: &str) -> SiteSettings {
        SiteSettings {
            id: id.into(),
            key: format!("{id}-key"),
            secrets: vec![secret.into()],
            token_keys: Vec::new(),
            mercure_keys: Vec::new(),
            mode: Mode::Public,
            allowed_origins: Vec::new(),
            client_events: false,
            webhook_url: None,
            limits: SiteLimits::default(),
        }
    }

    #[test]
    fn reload_keeps_staying_sites_and_marks_removed_ones() {
        let sites = Sites::new(vec![
            site("a", "secret-of-a-0123"),
            site("b", "secret-of-b-0123"),
        ]);
        let a = sites.by_key("a-key").unwrap();
        let b = sites.by_secret("secret-of-b-0123").unwrap();
        assert_eq!(b.id(), "b");
        assert!(sites.only().is_none());
        let reloaded = sites.apply(vec![
            site("a", "new-secret-of-a-0"),
            site("c", "secret-of-c-0123"),
        ]);
        assert_eq!(reloaded.added, ["c"]);
        assert_eq!(reloaded.changed, ["a"]);
        assert_eq!(reloaded.removed, ["b"]);
        assert!(b.is_removed() && !a.is_removed());
        assert!(
            Arc::ptr_eq(&a, &sites.by_id("a").unwrap()),
            "a keeps its state"
        );
        assert!(sites.by_secret("secret-of-a-0123").is_none());
        assert_eq!(sites.by_secret("new-secret-of-a-0").unwrap().id(), "a");
        assert!(sites.by_key("b-key").is_none());
    }
}
