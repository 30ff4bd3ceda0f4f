//! StatusNet's channel names as Herald channels: the one rule every
//! compatibility way in follows (docs/compat.md), the Meteor and STOMP
//! publish ports as much as Meteor's `/push` subscribers and STOMP over
//! WebSocket, so that a notice published under one name reaches every
//! subscriber of that name whichever protocol either side speaks.
//!
//! 1. The site plugin's `channelbase` comes off (with its `-`, or `/` in a
//!    STOMP destination); a name without it is used as it is.
//! 2. A STOMP destination's path is joined with `-`: `/all/evan` is
//!    `all-evan`, the name the Meteor plugin gives the same timeline.
//! 3. With user timelines on, a user's inbox and replies (`all-<nick>`,
//!    `replies-<nick>`) are Herald's timelines of that user, `user:<id>`
//!    and `replies:<id>` (docs/timelines.md): the id is the nick itself,
//!    or the nick's id in the site's table when it gives one (a nick it
//!    does not list stays a plain channel).

use std::{collections::HashMap, sync::Arc};

use fanout::ChannelName;

/// How a user's StatusNet timelines are named in Herald (`compat.user_timelines`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UserTimelines {
    /// `all-evan` is the channel `all-evan`, readable by anyone, as in Meteor.
    #[default]
    Plain,
    /// `all-evan` is `user:evan`: the site's user ids are its nicks.
    NickIsId,
    /// `all-evan` is `user:<id>` for the nicks listed (`compat.nicks_file`);
    /// any other nick's stays a plain channel.
    Table(Arc<HashMap<String, String>>),
}

/// The names of one compatibility way in: its channel base and the site's
/// user timelines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusNetNames {
    pub channelbase: String,
    pub users: UserTimelines,
}

impl StatusNetNames {
    /// Herald's channel for a Meteor channel name (`mysite-all-evan`).
    pub fn meteor(&self, name: &str) -> Result<ChannelName, fanout::Error> {
        self.timeline(without_base(name, &self.channelbase, '-'))
    }

    /// Herald's channel for a STOMP destination (`/mysite/all/evan`).
    pub fn stomp(&self, destination: &str) -> Result<ChannelName, fanout::Error> {
        let path = destination.strip_prefix('/').unwrap_or(destination);
        let path = without_base(path, &self.channelbase, '/');
        self.timeline(&path.replace('/', "-"))
    }

    /// `name` (the base off, `-` joined) as a user's timeline when it is
    /// one, else as it is.
    fn timeline(&self, name: &str) -> Result<ChannelName, fanout::Error> {
        let mapped = [("all-", "user:"), ("replies-", "replies:")]
            .iter()
            .find_map(|(prefix, timeline)| {
                let nick = name.strip_prefix(prefix).filter(|nick| !nick.is_empty())?;
                let id = match &self.users {
                    UserTimelines::Plain => return None,
                    UserTimelines::NickIsId => nick,
                    UserTimelines::Table(ids) => ids.get(nick)?.as_str(),
                };
                Some(format!("{timeline}{id}"))
            });
        ChannelName::new(mapped.as_deref().unwrap_or(name))
    }
}

/// A name without the site plugin's channel base: the name after `base`
/// and `separator` when it starts with them, else the name as it is.
pub fn without_base<'a>(name: &'a str, base: &str, separator: char) -> &'a str {
    if base.is_empty() {
        return name;
    }
    name.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix(separator))
        .unwrap_or(name)
}

/// Reads a nick table: one `nick id` pair per line, separated by spaces or
/// a tab (what `SELECT nickname, id FROM user` exports); blank lines and
/// lines starting with `#` are skipped. Errors name the line.
pub fn parse_nicks(text: &str) -> Result<HashMap<String, String>, String> {
    let mut ids = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(nick), Some(id), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("line {}: expected `nick id`", index + 1));
        };
        if !fanout::timeline::is_user_id(id) {
            return Err(format!(
                "line {}: {id:?} cannot be a user id in a channel name",
                index + 1
            ));
        }
        if ids.insert(nick.to_string(), id.to_string()).is_some() {
            return Err(format!("line {}: nick {nick:?} is listed twice", index + 1));
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(users: UserTimelines) -> StatusNetNames {
        StatusNetNames {
            channelbase: "mysite".into(),
            users,
        }
    }

    fn meteor(names: &StatusNetNames, name: &str) -> String {
        names
            .meteor(name)
            .map(|c| c.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn plain_names_keep_statusnet_timelines_as_they_are() {
        let plain = names(UserTimelines::Plain);
        assert_eq!(meteor(&plain, "mysite-all-evan"), "all-evan");
        assert_eq!(meteor(&plain, "public"), "public");
        assert_eq!(meteor(&plain, "mysiteother"), "mysiteother");
        assert_eq!(
            plain.stomp("/mysite/all/evan").unwrap().as_str(),
            "all-evan"
        );
        assert_eq!(plain.stomp("/tag/rust").unwrap().as_str(), "tag-rust");
        assert!(plain.meteor("mysite-bad name").is_err());
    }

    #[test]
    fn user_timelines_map_inbox_and_replies_only() {
        let by_nick = names(UserTimelines::NickIsId);
        assert_eq!(meteor(&by_nick, "mysite-all-evan"), "user:evan");
        assert_eq!(meteor(&by_nick, "replies-evan"), "replies:evan");
        assert_eq!(by_nick.stomp("/all/evan").unwrap().as_str(), "user:evan");
        assert_eq!(meteor(&by_nick, "showstream-evan"), "showstream-evan");
        assert_eq!(meteor(&by_nick, "all-"), "all-");
        let table = parse_nicks("# exported\nevan 7\n\nzach\t12\n").unwrap();
        let by_table = names(UserTimelines::Table(Arc::new(table)));
        assert_eq!(meteor(&by_table, "all-evan"), "user:7");
        assert_eq!(meteor(&by_table, "replies-zach"), "replies:12");
        assert_eq!(meteor(&by_table, "all-nobody"), "all-nobody");
    }

    #[test]
    fn nick_tables_name_their_bad_lines() {
        assert_eq!(
            parse_nicks("evan").unwrap_err(),
            "line 1: expected `nick id`"
        );
        assert_eq!(
            parse_nicks("a 1\nb 2 3").unwrap_err(),
            "line 2: expected `nick id`"
        );
        assert!(
            parse_nicks("a 1\na 2")
                .unwrap_err()
                .contains("listed twice")
        );
        assert!(
            parse_nicks("a b/c")
                .unwrap_err()
                .contains("cannot be a user id")
        );
    }
}
