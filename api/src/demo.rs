//! The live demo's little microblog (served at `/` in zero-config mode, docs/client.md): users by
//! nickname, who follows whom, and the newest notices, in memory and bounded. It is a demo, not a
//! microblog: nothing is kept across a restart.
//!
//! A notice goes where a StatusNet site would push it: the public timeline (`public`), its
//! author's notices (`notices-<nick>`), each of its hashtags (`tag-<tag>`), and the home timeline
//! (`user:<nick>`, through the timeline fan-out of `POST /api/deliver`) of its author and of
//! everyone who follows the author.

use std::collections::{BTreeSet, HashMap, VecDeque};

use parking_lot::Mutex;
use serde_json::{Value, json};

/// The most users the demo keeps; past it, new nicknames are refused.
pub(crate) const MAX_USERS: usize = 10_000;
/// The most notices kept for a new page's first view.
const KEPT_NOTICES: usize = 100;
/// The longest notice, in characters (StatusNet's default was 140; microblogs grew since).
pub(crate) const MAX_TEXT_CHARS: usize = 280;
/// The most users one user may follow.
pub(crate) const MAX_FOLLOWING: usize = 1_000;

/// Why the demo refused a request; its text is the answer's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DemoRefusal(pub String);

#[derive(Default)]
struct User {
    following: BTreeSet<String>,
    followers: BTreeSet<String>,
}

#[derive(Default)]
struct Store {
    users: HashMap<String, User>,
    notices: VecDeque<Value>,
    next_id: u64,
}

/// The demo's state.
#[derive(Default)]
pub(crate) struct Demo {
    store: Mutex<Store>,
}

/// A posted notice and where it goes.
pub(crate) struct Posted {
    pub notice: Value,
    /// The ordinary channels it is published to.
    pub channels: Vec<String>,
    /// The users whose home timeline gets it.
    pub homes: Vec<String>,
}

/// A nickname: 1 to 32 of `a-z 0-9 _`, as StatusNet's were.
pub(crate) fn check_nick(nick: &str) -> Result<(), DemoRefusal> {
    let valid = (1..=32).contains(&nick.len())
        && nick
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(DemoRefusal(format!(
            "{nick:?} is not a nickname: 1 to 32 of a-z, 0-9 and _"
        )))
    }
}

/// The hashtags of `text`: `#` then letters, digits or `_`, lower-cased, each once.
fn tags(text: &str) -> Vec<String> {
    let mut found = BTreeSet::new();
    for word in text.split('#').skip(1) {
        let tag: String = word
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(32)
            .collect::<String>()
            .to_ascii_lowercase();
        if !tag.is_empty() {
            found.insert(tag);
        }
    }
    found.into_iter().collect()
}

impl Store {
    fn user(&mut self, nick: &str) -> Result<&mut User, DemoRefusal> {
        check_nick(nick)?;
        if !self.users.contains_key(nick) && self.users.len() >= MAX_USERS {
            return Err(DemoRefusal(format!(
                "the demo keeps at most {MAX_USERS} users"
            )));
        }
        Ok(self.users.entry(nick.to_string()).or_default())
    }
}

impl Demo {
    /// What a page shows first for `nick` (who is registered by asking).
    pub fn state(&self, nick: &str) -> Result<Value, DemoRefusal> {
        let mut store = self.store.lock();
        let user = store.user(nick)?;
        let following: Vec<&String> = user.following.iter().collect();
        let followers: Vec<&String> = user.followers.iter().collect();
        let state = json!({
            "nick": nick,
            "following": following,
            "followers": followers,
        });
        let mut users: Vec<&String> = store.users.keys().collect();
        users.sort();
        users.truncate(200);
        let mut state = state;
        state["users"] = json!(users);
        state["notices"] = json!(store.notices.iter().rev().collect::<Vec<_>>());
        Ok(state)
    }

    /// Records a notice by `nick` and says where it goes.
    pub fn post(&self, nick: &str, text: &str, at_ms: u64) -> Result<Posted, DemoRefusal> {
        let text = text.trim();
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_TEXT_CHARS {
            return Err(DemoRefusal(format!(
                "a notice has 1 to {MAX_TEXT_CHARS} characters"
            )));
        }
        let mut store = self.store.lock();
        let followers: Vec<String> = store.user(nick)?.followers.iter().cloned().collect();
        store.next_id += 1;
        let tags = tags(text);
        let notice = json!({
            "id": store.next_id,
            "nick": nick,
            "text": text,
            "tags": tags,
            "at_ms": at_ms,
        });
        store.notices.push_back(notice.clone());
        while store.notices.len() > KEPT_NOTICES {
            store.notices.pop_front();
        }
        let mut channels = vec!["public".to_string(), format!("notices-{nick}")];
        channels.extend(tags.iter().map(|tag| format!("tag-{tag}")));
        let mut homes = followers;
        homes.push(nick.to_string());
        Ok(Posted {
            notice,
            channels,
            homes,
        })
    }

    /// `nick` follows `target` (or stops following); answers whom `nick` follows.
    pub fn follow(&self, nick: &str, target: &str, follow: bool) -> Result<Value, DemoRefusal> {
        if nick == target {
            return Err(DemoRefusal("a user does not follow themselves".into()));
        }
        let mut store = self.store.lock();
        store.user(target)?;
        let user = store.user(nick)?;
        if follow && user.following.len() >= MAX_FOLLOWING && !user.following.contains(target) {
            return Err(DemoRefusal(format!(
                "a user follows at most {MAX_FOLLOWING} others"
            )));
        }
        if follow {
            user.following.insert(target.to_string());
        } else {
            user.following.remove(target);
        }
        let following: Vec<String> = user.following.iter().cloned().collect();
        let target = store.user(target)?;
        if follow {
            target.followers.insert(nick.to_string());
        } else {
            target.followers.remove(nick);
        }
        Ok(json!({ "nick": nick, "following": following }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_goes_to_its_channels_and_to_its_followers_homes() {
        let demo = Demo::default();
        demo.follow("bob", "ann", true).unwrap();
        let posted = demo
            .post("ann", "hello #Herald and #herald #x_1!", 1)
            .unwrap();
        assert_eq!(
            posted.channels,
            ["public", "notices-ann", "tag-herald", "tag-x_1"]
        );
        assert_eq!(posted.homes, ["bob", "ann"]);
        assert_eq!(posted.notice["tags"], json!(["herald", "x_1"]));
        demo.follow("bob", "ann", false).unwrap();
        assert_eq!(demo.post("ann", "again", 2).unwrap().homes, ["ann"]);
        let state = demo.state("ann").unwrap();
        assert_eq!(state["notices"][0]["text"], "again", "newest first");
    }

    #[test]
    fn bad_input_is_refused() {
        let demo = Demo::default();
        for nick in ["", "Ann", "a b", &"a".repeat(33)] {
            assert!(demo.state(nick).is_err(), "{nick:?}");
        }
        assert!(demo.post("ann", "   ", 1).is_err());
        assert!(demo.post("ann", &"x".repeat(281), 1).is_err());
        assert!(demo.follow("ann", "ann", true).is_err());
        assert!(demo.follow("ann", "B", true).is_err());
    }
}
